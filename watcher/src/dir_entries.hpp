#pragma once
// Lists an open folder with getdents64(2) into a buffer that lives inside the
// reader (on the caller's stack), not with opendir/readdir: fdopendir costs an
// fcntl and a 32 KiB malloc per folder, which showed in the profile of
// indexing 100k checkpoints. Thread-safe: a reader shares nothing, so any
// number of threads may each list their own folders.

#include <array>
#include <cstddef>
#include <string_view>

namespace ckptd::watcher {

// One entry of a folder: its name and the kernel's DT_* type (DT_UNKNOWN on
// filesystems that do not say; callers then fstatat). `name` is
// NUL-terminated (name.data()[name.size()] == '\0') and stays valid until the
// next call to next() or the reader's end.
struct dir_entry_view {
  std::string_view name;
  unsigned char type = 0;
};

// How a dir_reader knows it reached the end of a folder.
enum class listing_end {
  // When getdents64 returns nothing: always right, one call more per folder.
  empty_read,
  // Also when a read leaves room for the longest entry: the kernel stops
  // filling only when the next entry does not fit or the folder ends. Only
  // for filesystems that fill every read that way (see filesystems.hpp);
  // FUSE, network filesystems and others may return fewer entries mid-folder.
  short_read,
};

// Reads the entries of the folder open as `dir_fd` (opened for reading with
// O_DIRECTORY, not O_PATH), from the descriptor's current position, skipping
// "." and "..". Does not own or close `dir_fd`. Not copyable: the entries point
// into its buffer. About 8 KiB: keep one per folder being listed, not one per
// level of a recursion that is still open.
class dir_reader {
 public:
  explicit dir_reader(int dir_fd, listing_end end = listing_end::empty_read) noexcept
      : fd_(dir_fd), end_at_short_read_(end == listing_end::short_read) {}
  dir_reader(const dir_reader&) = delete;
  dir_reader& operator=(const dir_reader&) = delete;

  // The next entry: true and `out` set, or false at the end of the folder or
  // on an error (then error() is its errno, 0 at a clean end).
  [[nodiscard]] bool next(dir_entry_view& out) noexcept;
  [[nodiscard]] int error() const noexcept { return error_; }
  // getdents64 calls made so far.
  [[nodiscard]] unsigned reads() const noexcept { return reads_; }

 private:
  // Entries are 8-aligned records of 19 header bytes plus the name; this many
  // bytes hold a checkpoint folder's few dozen entries in one system call.
  static constexpr std::size_t buffer_bytes = 8192;
  // The longest record: a 255-byte name (NAME_MAX) and its NUL, 8-aligned.
  static constexpr std::size_t longest_record = (19 + 255 + 1 + 7) / 8 * 8;

  int fd_;
  bool end_at_short_read_;
  int error_ = 0;
  unsigned reads_ = 0;
  bool done_ = false;
  std::size_t at_ = 0;
  std::size_t end_ = 0;
  alignas(8) std::array<char, buffer_bytes> buffer_;
};

}  // namespace ckptd::watcher
