#include "dir_entries.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace ckptd::watcher {

namespace {

// The kernel's record (include/linux/dirent.h); glibc 2.30+ declares it as
// struct dirent64 with getdents64(), older ones do not, so read it by offset.
constexpr std::size_t reclen_at = 16;  // after d_ino (8) and d_off (8)
constexpr std::size_t type_at = 18;
constexpr std::size_t name_at = 19;

}  // namespace

bool dir_reader::next(dir_entry_view& out) noexcept {
  for (;;) {
    if (at_ >= end_) {
      if (done_) return false;
      long n;
      do {
        ++reads_;
        n = ::syscall(SYS_getdents64, fd_, buffer_.data(), buffer_.size());
      } while (n < 0 && errno == EINTR);
      if (n <= 0) {
        // 0 is the end of the folder. An error (ENOENT: the folder was removed
        // while listed; EINVAL: a name longer than the buffer, impossible
        // with NAME_MAX 255) ends it too.
        error_ = n < 0 ? errno : 0;
        done_ = true;
        return false;
      }
      at_ = 0;
      end_ = static_cast<std::size_t>(n);
      // Room left for any entry: the kernel stopped at the folder's end.
      done_ = end_at_short_read_ && end_ + longest_record <= buffer_.size();
    }
    const char* record = buffer_.data() + at_;
    std::uint16_t reclen = 0;
    std::memcpy(&reclen, record + reclen_at, sizeof reclen);
    if (reclen <= name_at || at_ + reclen > end_) {  // never from a sane kernel
      error_ = EIO;
      done_ = true;
      at_ = end_ = 0;
      return false;
    }
    at_ += reclen;
    const char* name = record + name_at;
    // The kernel pads the name with NULs up to reclen; it is always terminated.
    const std::string_view view(name, ::strnlen(name, reclen - name_at));
    if (view == "." || view == "..") continue;
    out.name = view;
    out.type = static_cast<unsigned char>(record[type_at]);
    return true;
  }
}

}  // namespace ckptd::watcher
