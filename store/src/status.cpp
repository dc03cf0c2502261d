#include "status.hpp"

#include <string_view>

namespace ckptd::store {

errc to_errc(const rocksdb::Status& s) noexcept {
  switch (s.code()) {
    case rocksdb::Status::kCorruption:
      return errc::corrupt;
    case rocksdb::Status::kIOError: {
      // RocksDB reports a held LOCK file as a plain IOError; only its message
      // tells. "While lock file" is another process (fcntl said EAGAIN),
      // "lock hold by current process" this one.
      const char* state = s.getState();
      const std::string_view msg = state ? state : "";
      if (msg.find("While lock file") != std::string_view::npos ||
          msg.find("lock hold by current process") != std::string_view::npos) {
        return errc::busy;
      }
      // A file that the database's own metadata names is gone: the database
      // is damaged, and retrying will not help.
      if (s.subcode() == rocksdb::Status::kPathNotFound) return errc::corrupt;
      return errc::io_error;  // including kNoSpace
    }
    case rocksdb::Status::kBusy:
    case rocksdb::Status::kTimedOut:
    case rocksdb::Status::kTryAgain:
      return errc::busy;
    case rocksdb::Status::kInvalidArgument:
      return errc::invalid_argument;
    case rocksdb::Status::kNotSupported:
      // Only opening can meet this: the database uses a feature (a format
      // version, a compression) that ckptd never writes.
      return errc::unknown_schema;
    default:
      return errc::io_error;
  }
}

}  // namespace ckptd::store
