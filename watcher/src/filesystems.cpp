#include "filesystems.hpp"

#include <sys/statfs.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>

namespace ckptd::watcher {

std::string_view remote_filesystem_name(const std::string& path) {
  struct statfs st {};
  if (::statfs(path.c_str(), &st) != 0) return {};
  switch (static_cast<std::uint32_t>(st.f_type)) {
    case 0x6969u:
      return "nfs";
    case 0x0BD00BD0u:
      return "lustre";
    case 0x47504653u:
      return "gpfs";
    case 0xFF534D42u:
      return "cifs";
    case 0xFE534D42u:
      return "smb2";
    case 0x517Bu:
      return "smb";
    case 0x65735546u:
      return "fuse";
    case 0x00C36400u:
      return "ceph";
    case 0x01021997u:
      return "9p";
    case 0x5346414Fu:
      return "afs";
    case 0x6B414653u:
      return "afs";
    case 0x013111A8u:
      return "ibrix";
    case 0x0BD00BD1u:
      return "lustre";
    default:
      return {};
  }
}

bool fills_every_read(std::uint64_t f_type) {
  switch (f_type) {
    case 0xEF53u:      // ext2, ext3, ext4
    case 0x58465342u:  // XFS
    case 0x9123683Eu:  // Btrfs
    case 0x01021994u:  // tmpfs
      return true;
    default:
      return false;
  }
}

namespace {

// A mount point as mountinfo spells it: space, tab, newline and backslash as
// octal escapes ("\040").
std::string unescape_mount_point(std::string_view field) {
  std::string out;
  out.reserve(field.size());
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && field[i + 1] >= '0' && field[i + 1] <= '3' &&
        field[i + 2] >= '0' && field[i + 2] <= '7' && field[i + 3] >= '0' && field[i + 3] <= '7') {
      out.push_back(static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 +
                                      (field[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(field[i]);
    }
  }
  return out;
}

}  // namespace

bool mount_point_below(std::string_view mountinfo, std::string_view dir) {
  // Everything below "/" starts with "/"; below "/a" with "/a/".
  const std::string prefix = dir == "/" ? std::string("/") : std::string(dir) + "/";
  while (!mountinfo.empty()) {
    const auto eol = mountinfo.find('\n');
    std::string_view line = mountinfo.substr(0, eol);
    mountinfo = eol == std::string_view::npos ? std::string_view() : mountinfo.substr(eol + 1);
    // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw":
    // the mount point is the fifth field.
    for (int field = 0; field < 4 && !line.empty(); ++field) {
      const auto space = line.find(' ');
      line = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    }
    const std::string point = unescape_mount_point(line.substr(0, line.find(' ')));
    if (point.size() > prefix.size() && point.starts_with(prefix)) return true;
  }
  return false;
}

listing_end listing_end_below(const std::string& dir) {
  struct statfs st {};
  if (::statfs(dir.c_str(), &st) != 0 || !fills_every_read(static_cast<std::uint64_t>(st.f_type)))
    return listing_end::empty_read;
  // Mount points are listed by their real paths.
  const std::unique_ptr<char, decltype(&std::free)> real(::realpath(dir.c_str(), nullptr),
                                                         &std::free);
  if (!real) return listing_end::empty_read;
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return listing_end::empty_read;
  const std::string mountinfo((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
  if (mountinfo.empty()) return listing_end::empty_read;  // unreadable: assume the worst
  return mount_point_below(mountinfo, real.get()) ? listing_end::empty_read
                                                  : listing_end::short_read;
}

}  // namespace ckptd::watcher
