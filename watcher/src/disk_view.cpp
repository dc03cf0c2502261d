// view_from_disk: the candidate_view the engine hands to layouts.
//
// Strictly read-only and short-lived, because trainers and their cleanup code
// work in the same folders:
//  - Nothing is written, locked or renamed, and no file stays open: a file
//    held open on NFS turns its deletion into a ".nfsXXXX" silly rename, and
//    the trainer's rmtree of an old checkpoint then fails ("Directory not
//    empty"), leaving half-deleted folders or crashing the job.
//  - Symlinks are never followed: lstat/fstatat(AT_SYMLINK_NOFOLLOW) for the
//    listing and O_NOFOLLOW on every path component for reads, so a link in
//    a training folder cannot make ckptd read elsewhere.
//  - O_NOATIME where the kernel allows it (only the file's owner or a
//    CAP_FOWNER process may; EPERM otherwise, then we open without it), so
//    ckptd's reads do not dirty inodes on relatime-less mounts.
//  - Entries that vanish between readdir and stat are skipped: rotation may
//    delete a checkpoint while it is being listed.
//  - The listing is bounded in depth and in entries.
//  - Files beside the candidate (read_sibling, read_beside, list_beside) get
//    the same treatment: every component below the parent (or grandparent)
//    is opened with O_NOFOLLOW, and "", "." and ".." components are refused,
//    so a layout can look only where it says it looks.

#include "dir_entries.hpp"
#include "formats.hpp"
#include "layout.hpp"

#include <ckptd/log.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <utility>

namespace ckptd::watcher {

namespace {

// A checkpoint folder with more entries than this is not one ckptd can judge
// (a dataset cache, a home directory); the listing stops there, with a warning.
constexpr std::size_t max_entries = 100'000;
constexpr int max_depth_limit = 16;
// Reads are bounded by their callers; this only stops a runaway request from
// allocating without limit.
constexpr std::uint64_t max_read_bytes = 256ull << 20;
// A run folder's logs/ or the folder above checkpoints/ holds a handful of
// files; more than this and the rest are not looked at.
constexpr std::size_t max_beside_entries = 10'000;
// Room made for a candidate's listing before the first entry.
constexpr std::size_t initial_entries = 16;
// The least a read grows its buffer by when a file is longer than listed.
constexpr std::uint64_t min_growth_bytes = 4096;

class fd_guard {
 public:
  explicit fd_guard(int fd) : fd_(fd) {}
  ~fd_guard() {
    if (fd_ >= 0) ::close(fd_);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::int64_t mtime_ns_of(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

int open_retrying(int dirfd, const char* name, int flags) {
  int fd;
  do {
    fd = ::openat(dirfd, name, flags);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// Opens a regular file for reading without following symlinks and without
// blocking on a FIFO that might have taken its place.
int open_file_for_read(int dirfd, const char* name) {
  constexpr int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
  int fd = open_retrying(dirfd, name, flags | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = open_retrying(dirfd, name, flags);
  return fd;
}

// A plain name for an entry of one folder: no '/', not "", "." or "..".
bool is_plain_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos;
}

constexpr int open_dir_flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

// Opens the folder at `rel` below the folder open as `base_fd` (`rel` "" is
// that folder itself), one component at a time and refusing symlinks at every
// step. With `want_file`, the last component is opened as a regular file for
// reading instead. -1 when anything is missing, refused or not of the kind
// asked for. `base_fd` stays open.
int open_below_fd(int base_fd, std::string_view rel, bool want_file) {
  if (!rel.empty() && rel.front() == '/') return -1;
  if (rel.empty() && want_file) return -1;
  if (want_file && is_plain_name(rel)) {
    // The common case (a file directly in the candidate): one openat, with
    // the name copied to the stack ("trainer_state.json" is too long for a
    // std::string's inline buffer).
    if (rel.size() > NAME_MAX) return -1;
    std::array<char, NAME_MAX + 1> name{};
    std::memcpy(name.data(), rel.data(), rel.size());
    return open_file_for_read(base_fd, name.data());
  }
  int dir = open_retrying(base_fd, ".", open_dir_flags);
  std::size_t start = 0;
  while (dir >= 0 && start < rel.size()) {
    const auto slash = rel.find('/', start);
    const auto end = slash == std::string_view::npos ? rel.size() : slash;
    const std::string part(rel.substr(start, end - start));
    const bool last = end == rel.size();
    int next = -1;
    if (part.empty() || part == "." || part == "..") {
      next = -1;
    } else if (last && want_file) {
      next = open_file_for_read(dir, part.c_str());
    } else {
      next = open_retrying(dir, part.c_str(), open_dir_flags);
    }
    ::close(dir);
    if (last) return next;
    dir = next;
    start = end + 1;
  }
  if (rel.empty()) return dir;
  if (dir >= 0) ::close(dir);  // rel ended with '/'
  return -1;
}

// As open_below_fd, below the folder at the path `base`.
int open_below(const char* base, std::string_view rel, bool want_file) {
  const int base_fd = open_retrying(AT_FDCWD, base, open_dir_flags);
  if (base_fd < 0) return -1;
  const fd_guard guard(base_fd);
  return open_below_fd(base_fd, rel, want_file);
}

// Up to `length` bytes from `offset` of the file open as `fd` (closed here).
//
// `size_hint` is the file's size as the listing saw it. With it there is no
// fstat: one pread of hint + 1 bytes (from `offset`) normally returns exactly
// the hinted rest, which shows the file unchanged and ends the read. A file
// that grew or shrank since the listing is read on until EOF or `length`, the
// buffer growing as bytes arrive, so a caller's generous limit (64 MiB + 1)
// is never allocated up front. A FIFO or a folder that has taken the file's
// place fails its pread (ESPIPE, EISDIR): nullopt, as fstat's S_ISREG check
// gave before. (A device node would be read like a file, bounded by `length`;
// making one takes CAP_MKNOD.) Without a hint, fstat supplies it and refuses
// anything but a regular file.
std::optional<std::string> read_range(int fd, std::uint64_t offset, std::uint64_t length,
                                      std::optional<std::uint64_t> size_hint) {
  const fd_guard file(fd);
  const std::uint64_t want = std::min(length, max_read_bytes);
  if (!size_hint || want == 0) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    if (want == 0) return std::string();
    size_hint = static_cast<std::uint64_t>(st.st_size);
  }
  const std::uint64_t expected = *size_hint > offset ? *size_hint - offset : 0;
  // The byte past the expected end tells a grown file from an unchanged one.
  std::string out;
  out.resize(static_cast<std::size_t>(std::min(want, expected + 1)));
  std::size_t got = 0;
  for (;;) {
    if (got == out.size()) {
      if (got == want) break;
      // Grew since listing: double, within `want`.
      const auto grown = std::max<std::uint64_t>(2 * got, min_growth_bytes);
      out.resize(static_cast<std::size_t>(std::min(want, grown)));
    }
    const ssize_t n =
        ::pread(fd, out.data() + got, out.size() - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;  // EOF
    got += static_cast<std::size_t>(n);
    // Exactly the listed size: the file is as listed, and this is its end.
    if (got == expected && got < out.size()) break;
  }
  out.resize(got);
  return out;
}

// The last component of `path`, where "a/b/" names b, like "a/b": what
// std::filesystem::path's filename() (or its parent's, after a trailing '/')
// gives, without splitting the whole path into components.
std::string_view last_component(std::string_view path) {
  const auto end = path.find_last_not_of('/');
  if (end == std::string_view::npos) return {};  // "", "/"
  path = path.substr(0, end + 1);
  const auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

class disk_view final : public candidate_view {
 public:
  disk_view(std::string path, std::string name, bool is_dir)
      : path_(std::move(path)), name_(std::move(name)), is_dir_(is_dir) {}

  std::string_view name() const override { return name_; }
  bool is_dir() const override { return is_dir_; }
  const std::vector<file_info>& files() const override { return files_; }

  ~disk_view() override {
    if (self_fd_ >= 0) ::close(self_fd_);
  }
  disk_view(const disk_view&) = delete;
  disk_view& operator=(const disk_view&) = delete;

  std::optional<std::string> read(std::string_view rel, std::uint64_t offset,
                                  std::uint64_t length) const override {
    const int fd =
        is_dir_ ? (rel.empty() ? -1 : open_in_self(rel)) : (rel.empty() ? open_self() : -1);
    if (fd < 0) return std::nullopt;
    return read_range(fd, offset, length, listed_size(rel));
  }

  std::optional<std::string> read_sibling(std::string_view name,
                                          std::uint64_t max_bytes) const override {
    if (!is_plain_name(name)) return std::nullopt;
    const int fd = open_below(base_of(0)->c_str(), name, /*want_file=*/true);
    if (fd < 0) return std::nullopt;
    // One byte more than allowed tells a file that is too large.
    auto text = read_range(fd, 0, max_bytes + 1, std::nullopt);
    if (!text || text->size() > max_bytes) return std::nullopt;
    return text;
  }

  bool sibling_exists(std::string_view name) const override {
    if (!is_plain_name(name)) return false;
    const int dir = open_below(base_of(0)->c_str(), "", /*want_file=*/false);
    if (dir < 0) return false;
    const fd_guard guard(dir);
    struct stat st {};
    return ::fstatat(dir, std::string(name).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  }

  std::optional<std::string> read_beside(int up, std::string_view rel, std::uint64_t offset,
                                         std::uint64_t length) const override {
    const auto base = base_of(up);
    if (!base || rel.empty()) return std::nullopt;
    const int fd = open_below(base->c_str(), rel, /*want_file=*/true);
    if (fd < 0) return std::nullopt;
    return read_range(fd, offset, length, std::nullopt);
  }

  std::vector<file_info> list_beside(int up, std::string_view rel) const override {
    std::vector<file_info> out;
    const auto base = base_of(up);
    if (!base) return out;
    const int fd = open_below(base->c_str(), rel, /*want_file=*/false);
    if (fd < 0) return out;
    // O_PATH descriptors cannot be listed: reopen the folder itself.
    const int dir_fd = open_retrying(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::close(fd);
    if (dir_fd < 0) return out;
    const fd_guard dir(dir_fd);
    dir_reader reader(dir_fd);
    dir_entry_view entry;
    while (reader.next(entry)) {
      if (out.size() >= max_beside_entries) break;
      struct stat st {};
      if (::fstatat(dir_fd, entry.name.data(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      const bool is_folder = S_ISDIR(st.st_mode);
      if (!is_folder && !S_ISREG(st.st_mode)) continue;
      out.push_back(file_info{std::string(entry.name), is_folder,
                              is_folder ? 0 : static_cast<std::uint64_t>(st.st_size),
                              mtime_ns_of(st)});
    }
    std::sort(out.begin(), out.end(),
              [](const file_info& a, const file_info& b) { return a.rel < b.rel; });
    return out;
  }

  // Lists the folder open as `root_fd` (taking ownership), which then stays
  // open until the view is destroyed: reads open files relative to it,
  // without walking the absolute path again.
  void list(int root_fd, int max_depth, listing_end listings_end) {
    self_fd_ = root_fd;
    listings_end_ = listings_end;
    // A checkpoint folder holds a handful of entries: one allocation, not
    // one per doubling from 1.
    files_.reserve(initial_entries);
    list_folder(root_fd, std::string(), 1, max_depth);
    std::sort(files_.begin(), files_.end(),
              [](const file_info& a, const file_info& b) { return a.rel < b.rel; });
  }

  void set_self(const struct stat& st) {
    files_.push_back(
        file_info{std::string(), false, static_cast<std::uint64_t>(st.st_size), mtime_ns_of(st)});
  }

 private:
  // Lists the folder open as `dir_fd` (kept open) and, below it, its
  // subfolders.
  void list_folder(int dir_fd, const std::string& prefix, int depth, int max_depth) {
    // Where this folder's subfolders sit in files_, to descend into.
    std::vector<std::size_t> subfolders;
    {
      // Scoped: the reader's buffer is gone before the descent, so a deep
      // tree holds one buffer on the stack, not one per level.
      dir_reader reader(dir_fd, listings_end_);
      dir_entry_view entry;
      while (reader.next(entry)) {
        if (files_.size() >= max_entries) {
          if (!truncated_) {
            truncated_ = true;
            log::warning("more than ", max_entries, " entries under ", path_,
                         "; looking at the first ", max_entries, " only");
          }
          break;
        }
        struct stat st {};
        if (::fstatat(dir_fd, entry.name.data(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        const bool is_folder = S_ISDIR(st.st_mode);
        if (!is_folder && !S_ISREG(st.st_mode)) continue;  // symlinks, sockets, FIFOs
        std::string rel;
        rel.reserve(prefix.size() + entry.name.size());
        rel.append(prefix).append(entry.name);
        if (is_folder && depth < max_depth) subfolders.push_back(files_.size());
        files_.push_back(file_info{std::move(rel), is_folder,
                                   is_folder ? 0 : static_cast<std::uint64_t>(st.st_size),
                                   mtime_ns_of(st)});
      }
    }
    for (const auto index : subfolders) {
      // Copied: files_ may grow (and move its strings) while listing below.
      const std::string sub = files_[index].rel;
      const char* sub_name = sub.c_str() + prefix.size();
      const int fd =
          open_retrying(dir_fd, sub_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) continue;  // vanished: skip
      const fd_guard guard(fd);
      list_folder(fd, sub + "/", depth + 1, max_depth);
    }
  }

  // The size of the candidate's file at `rel` as listed, or nullopt when the
  // listing does not have it as a file.
  std::optional<std::uint64_t> listed_size(std::string_view rel) const {
    const file_info* f = find_file(*this, rel);
    if (f == nullptr || f->is_dir) return std::nullopt;
    return f->size;
  }

  int open_self() const { return open_file_for_read(AT_FDCWD, path_.c_str()); }

  // Opens the file at `rel` inside the candidate folder, relative to its
  // open stream (by path only when the folder could not be listed).
  int open_in_self(std::string_view rel) const {
    if (self_fd_ < 0) return open_below(path_.c_str(), rel, /*want_file=*/true);
    return open_below_fd(self_fd_, rel, /*want_file=*/true);
  }

  // The candidate's parent (up 0) or the parent's parent (up 1), or nullopt.
  // Worked out per call, not in the constructor: most layouts never look
  // beside the candidate, and this path parsing was most of the instructions
  // view_from_disk spent outside system calls. No cache, so a view has no
  // state that its const reads change.
  std::optional<std::filesystem::path> base_of(int up) const {
    if (up != 0 && up != 1) return std::nullopt;
    // "a/b/" names b, like "a/b": its parent is a.
    std::filesystem::path self = path_;
    if (!self.has_filename()) self = self.parent_path();
    std::filesystem::path parent = self.parent_path();
    if (parent.empty()) parent = ".";
    if (up == 0) return parent;
    // The engine passes absolute paths; "." and ".." cover relative ones.
    std::filesystem::path grandparent =
        parent == "." ? std::filesystem::path("..") : parent.parent_path();
    if (grandparent.empty()) grandparent = ".";
    return grandparent;
  }

  std::string path_;  // as the engine gave it: base_of() alone parses it
  std::string name_;
  bool is_dir_;
  std::vector<file_info> files_;
  bool truncated_ = false;
  int self_fd_ = -1;  // the candidate folder, while the view lives
  listing_end listings_end_ = listing_end::empty_read;
};

}  // namespace

std::unique_ptr<candidate_view> view_from_disk(std::string path, int max_depth,
                                               listing_end listings_end) {
  std::string name(last_component(path));

  // Most candidates are folders: open one straight away (O_DIRECTORY and
  // O_NOFOLLOW refuse files and symlinks), and lstat only what is not one.
  const int fd =
      open_retrying(AT_FDCWD, path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOTDIR && errno != ELOOP) return nullptr;  // gone or unreadable
    struct stat st {};
    // Symlinks and special files are never candidates.
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return nullptr;
    auto view = std::make_unique<disk_view>(std::move(path), std::move(name), false);
    view->set_self(st);
    return view;
  }
  auto view = std::make_unique<disk_view>(std::move(path), std::move(name), true);
  view->list(fd, std::clamp(max_depth, 1, max_depth_limit), listings_end);
  return view;
}

}  // namespace ckptd::watcher
