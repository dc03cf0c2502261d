#pragma once
// What ckptd needs to know of the filesystems it watches: where inotify is
// blind to other hosts' writes (poll there), and where a folder listing may
// end at the first short read (one getdents64 call fewer per folder).

#include "dir_entries.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace ckptd::watcher {

// The name of the network or cluster filesystem `path` is on ("nfs", "fuse",
// "lustre", ...), where inotify misses other hosts' writes; empty for a local
// one or when statfs fails.
[[nodiscard]] std::string_view remote_filesystem_name(const std::string& path);

// How listings of folders at or below `dir` (a watched root or job folder)
// may end: at a short read when `dir` is on a filesystem that fills every
// read (fills_every_read) and no other filesystem is mounted below it, as
// /proc/self/mountinfo shows when this is called; else only at an empty read.
// A filesystem mounted below it later is one inotify cannot see into anyway.
[[nodiscard]] listing_end listing_end_below(const std::string& dir);

// Whether getdents64 on this filesystem (statfs f_type) keeps filling the
// buffer until the next entry does not fit or the folder ends: ext2/3/4, XFS,
// Btrfs and tmpfs, whose readdir loops over the whole folder. FUSE, NFS, SMB,
// Ceph and overlay (whose lower layer may be any of them) are left out.
[[nodiscard]] bool fills_every_read(std::uint64_t f_type);

// Whether the mount table (the text of /proc/self/mountinfo) has a mount
// point strictly below the folder `dir` (absolute, symlinks resolved, no
// trailing slash except for "/").
[[nodiscard]] bool mount_point_below(std::string_view mountinfo, std::string_view dir);

}  // namespace ckptd::watcher
