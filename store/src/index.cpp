// The RocksDB shell around codec: opening (with the read-only schema check),
// the write batch for a job_change, and the prefix scans.

#include <ckptd/store.hpp>

#include "codec.hpp"
#include "status.hpp"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <mutex>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace ckptd::store {
namespace {

namespace fs = std::filesystem;
using boost::system::error_code;
using boost::system::result;

// Memory: ckptd must idle under ~30 MB RSS, and its data is small (a few
// hundred bytes per checkpoint), so every RocksDB budget is kept modest.
constexpr std::size_t write_buffer_bytes = 8 << 20;
constexpr int max_write_buffers = 2;
constexpr std::size_t block_cache_bytes = 4 << 20;
constexpr int max_open_files = 256;
constexpr int max_background_jobs = 2;

// The encoding stores string lengths as u32.
constexpr std::size_t max_string_bytes = std::numeric_limits<std::uint32_t>::max();

// Hands one line to the caller's sink. Never throws: it runs on RocksDB's
// background threads too, and RocksDB is not exception-safe.
void emit(const index::log_sink& log, std::string_view line) noexcept {
  if (!log) return;
  try {
    log(line);
  } catch (...) {  // NOLINT(bugprone-empty-catch): a failing sink must not take the index down
  }
}

// RocksDB's info LOG, redirected. Left to itself RocksDB writes a LOG file in
// the database folder, and Debian's librocksdb aborts the process when a write
// to it fails (a full volume). Warnings and errors go to the sink; the chatty
// INFO stream and the option dump (HEADER) are dropped.
class sink_logger final : public rocksdb::Logger {
 public:
  explicit sink_logger(index::log_sink sink)
      : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL), sink_(std::move(sink)) {}

  // The unlevelled overload is RocksDB's old INFO-level entry point.
  void Logv(const char* /*format*/, va_list /*ap*/) override {}

  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (!sink_ || level < rocksdb::InfoLogLevel::WARN_LEVEL ||
        level >= rocksdb::InfoLogLevel::HEADER_LEVEL) {
      return;
    }
    // One bounded line: a long message is cut rather than allocated for.
    char buffer[1024];
    const int n = std::vsnprintf(buffer, sizeof buffer, format, ap);
    if (n < 0) return;
    std::string_view text(buffer, std::min(static_cast<std::size_t>(n), sizeof buffer - 1));
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
    const char* name = level == rocksdb::InfoLogLevel::WARN_LEVEL    ? "warning"
                       : level == rocksdb::InfoLogLevel::ERROR_LEVEL ? "error"
                                                                     : "fatal";
    std::string line = "rocksdb ";
    line += name;
    line += ": ";
    line += text;
    emit(sink_, line);
  }

 private:
  const index::log_sink sink_;
};

// Logs what failed and RocksDB's own words for why, and returns the code.
[[nodiscard]] error_code fail(const index::log_sink& log, std::string_view what,
                              const rocksdb::Status& s) {
  std::string line(what);
  line += ": ";
  line += s.ToString();
  emit(log, line);
  return make_error_code(to_errc(s));
}

[[nodiscard]] error_code fail(const index::log_sink& log, std::string_view what, errc e) {
  emit(log, what);
  return make_error_code(e);
}

[[nodiscard]] rocksdb::Options make_options(std::shared_ptr<rocksdb::Logger> logger) {
  rocksdb::Options options;
  options.info_log = std::move(logger);
  options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  options.write_buffer_size = write_buffer_bytes;
  options.max_write_buffer_number = max_write_buffers;
  options.max_open_files = max_open_files;
  options.max_background_jobs = max_background_jobs;
  // Periodic statistics would only feed the dropped INFO stream.
  options.stats_dump_period_sec = 0;
  options.stats_persist_period_sec = 0;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(block_cache_bytes);
  // Index and filter blocks count against the cache instead of growing
  // outside it with the data.
  table.cache_index_and_filter_blocks = true;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return options;
}

// Which folders this process has open, by device and inode (so that two
// spellings of one path are one folder). RocksDB's own in-process check
// compares path strings, and a second open through a symlink would succeed.
class dir_claim {
 public:
  using id = std::pair<dev_t, ino_t>;

  [[nodiscard]] static std::optional<dir_claim> acquire(id folder) {
    const std::lock_guard lock(mutex());
    if (!claimed().insert(folder).second) return std::nullopt;
    return dir_claim(folder);
  }

  dir_claim(dir_claim&& other) noexcept : folder_(std::exchange(other.folder_, std::nullopt)) {}
  dir_claim& operator=(dir_claim&&) = delete;
  ~dir_claim() {
    if (!folder_) return;
    const std::lock_guard lock(mutex());
    claimed().erase(*folder_);
  }

 private:
  explicit dir_claim(id folder) : folder_(folder) {}
  // Never destroyed, so that an index that outlives main (held in a static)
  // can still release its claim during exit.
  static std::mutex& mutex() {
    static auto* const m = new std::mutex;
    return *m;
  }
  static std::set<id>& claimed() {
    static auto* const s = new std::set<id>;
    return *s;
  }

  std::optional<id> folder_;
};

// The pid of another process holding RocksDB's LOCK file, if any. Checked
// before the read-only open because RocksDB calls a read-only open next to a
// live writer undefined behaviour. Closing the descriptor drops every POSIX
// lock this process holds on the file, which is harmless only because
// dir_claim guarantees this process has no index open on this folder.
[[nodiscard]] std::optional<pid_t> lock_holder(const fs::path& lock_file) {
  const int fd = ::open(lock_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;  // no LOCK file: nobody holds it
  struct flock query {};
  query.l_type = F_WRLCK;
  query.l_whence = SEEK_SET;
  const int rc = ::fcntl(fd, F_GETLK, &query);
  ::close(fd);
  if (rc != 0 || query.l_type == F_UNLCK) return std::nullopt;
  return query.l_pid;
}

enum class schema_state {
  current,      // holds this build's schema version
  empty_no_key  // no schema key and no keys at all: adopt it
};

// The read-only look at an existing database. Nothing is written, so a
// refused folder stays exactly as it was.
[[nodiscard]] result<schema_state> check_schema(const std::string& dir,
                                                const rocksdb::Options& options,
                                                const index::log_sink& log) {
  // ckptd only ever uses the default column family. A read-only open may
  // leave others out, so they would otherwise go unnoticed, and their
  // database would pass for an empty one below.
  std::vector<std::string> families;
  const rocksdb::Status listed = rocksdb::DB::ListColumnFamilies(options, dir, &families);
  if (!listed.ok()) return fail(log, "cannot read the column families of index " + dir, listed);
  if (families != std::vector<std::string>{rocksdb::kDefaultColumnFamilyName}) {
    std::string names;
    for (const auto& f : families) names += (names.empty() ? "" : ", ") + codec::printable(f);
    return fail(log, "index " + dir + " has column families ckptd never creates: " + names,
                errc::unknown_schema);
  }

  rocksdb::DB* raw = nullptr;
  const rocksdb::Status opened = rocksdb::DB::OpenForReadOnly(options, dir, &raw);
  if (!opened.ok()) {
    const std::string what = "cannot open index " + dir + " read-only";
    // Invalid argument here means column families or options ckptd never
    // creates: somebody else's database.
    if (opened.IsInvalidArgument()) {
      emit(log, what + ": " + opened.ToString());
      return make_error_code(errc::unknown_schema);
    }
    return fail(log, what, opened);
  }
  const std::unique_ptr<rocksdb::DB> db(raw);

  std::string value;
  const rocksdb::Status got = db->Get(rocksdb::ReadOptions(), codec::schema_key(), &value);
  if (got.IsNotFound()) {
    // A database without a schema key is either somebody else's or one ckptd
    // created and crashed before writing the key (creation and the first
    // write cannot be one atomic step). Only the second is empty.
    const std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
    it->SeekToFirst();
    if (!it->status().ok()) return fail(log, "cannot read index " + dir, it->status());
    if (!it->Valid()) return schema_state::empty_no_key;
    return fail(log,
                "index " + dir + " has no ckptd schema key; its first key is \"" +
                    codec::printable(it->key().ToStringView()) + "\"",
                errc::unknown_schema);
  }
  if (!got.ok()) return fail(log, "cannot read the schema version of index " + dir, got);

  const auto version = codec::decode_schema(value);
  if (!version || *version == 0) {
    return fail(
        log, "index " + dir + " has a malformed schema version \"" + codec::printable(value) + "\"",
        errc::corrupt);
  }
  if (*version > index::schema_version) {
    return fail(log,
                "index " + dir + " has schema version " + std::to_string(*version) +
                    "; this ckptd reads up to " + std::to_string(index::schema_version),
                errc::newer_schema);
  }
  return schema_state::current;
}

class rocks_index final : public index {
 public:
  rocks_index(dir_claim claim, std::unique_ptr<rocksdb::DB> db, log_sink log)
      : claim_(std::move(claim)), log_(std::move(log)), db_(std::move(db)) {}

  rocks_index(const rocks_index&) = delete;
  rocks_index& operator=(const rocks_index&) = delete;

  ~rocks_index() override {
    // A clean shutdown leaves everything applied durable; the WAL replays on
    // the next open, so there is no need to flush memtables here.
    if (const auto s = db_->FlushWAL(/*sync=*/true); !s.ok()) {
      emit(log_, "syncing the index WAL at close: " + s.ToString());
    }
    if (const auto s = db_->Close(); !s.ok()) {
      emit(log_, "closing the index: " + s.ToString());
    }
    // db_ is destroyed before claim_ (reverse declaration order), so the
    // folder is released only once RocksDB has let go of its LOCK file.
  }

  result<void> apply(const job_change& change) override {
    const std::string& uuid = change.job_uuid;
    if (auto valid = validate(change); !valid) return valid;

    // Deletions first, puts after, so that the change's own records are what
    // remains: remove_job with upserts replaces the job wholesale, and a path
    // both removed and upserted ends up upserted.
    rocksdb::WriteBatch batch;
    rocksdb::Status s;
    const auto step = [&s](rocksdb::Status next) {
      if (s.ok()) s = std::move(next);
    };
    if (change.remove_job) {
      step(batch.Delete(codec::job_key(uuid)));
      // One range tombstone: atomic with the rest of the batch, unlike
      // iterating and deleting, which would miss a checkpoint added by a
      // concurrent apply between the scan and the write.
      step(batch.DeleteRange(codec::checkpoint_prefix(uuid), codec::checkpoint_prefix_end(uuid)));
    }
    for (const auto& path : change.removed_paths) {
      step(batch.Delete(codec::checkpoint_key(uuid, path)));
    }
    if (change.upsert_job) {
      step(batch.Put(codec::job_key(uuid), codec::encode_job(*change.upsert_job)));
    }
    for (const auto& c : change.upserts) {
      step(batch.Put(codec::checkpoint_key(uuid, c.path), codec::encode_checkpoint(c)));
    }
    if (!s.ok()) return fail(log_, "building the write batch for job " + uuid, s);
    if (batch.Count() == 0) return {};

    // WAL on, no sync: the write survives a crash of ckptd; flush() makes it
    // survive a power loss too.
    s = db_->Write(rocksdb::WriteOptions(), &batch);
    if (!s.ok()) return fail(log_, "writing a change to job " + uuid, s);
    return {};
  }

  result<std::vector<checkpoint>> checkpoints(std::string_view job_uuid) const override {
    if (!codec::is_storable(job_uuid)) {
      return fail(log_, "checkpoints(): job uuid is empty or holds a NUL", errc::invalid_argument);
    }
    const std::string prefix = codec::checkpoint_prefix(job_uuid);
    std::vector<checkpoint> out;
    auto scanned = scan(prefix, codec::checkpoint_prefix_end(job_uuid),
                        [&](std::string_view key, std::string_view value) -> result<void> {
                          auto path = codec::path_from_key(key, prefix);
                          if (!path) return path.error();
                          auto c = codec::decode_checkpoint(value, std::move(*path));
                          if (!c) return c.error();
                          out.push_back(std::move(*c));
                          return {};
                        });
    if (!scanned) return scanned.error();
    return out;
  }

  result<std::optional<job>> find_job(std::string_view job_uuid) const override {
    if (!codec::is_storable(job_uuid)) {
      return fail(log_, "find_job(): job uuid is empty or holds a NUL", errc::invalid_argument);
    }
    const std::string key = codec::job_key(job_uuid);
    std::string value;
    const rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), key, &value);
    if (s.IsNotFound()) return std::optional<job>();
    if (!s.ok()) return fail(log_, "reading job " + std::string(job_uuid), s);
    auto j = codec::decode_job(value, std::string(job_uuid));
    if (!j) return corrupt_record(key, value);
    return std::optional<job>(std::move(*j));
  }

  result<std::vector<job>> jobs() const override {
    std::vector<job> out;
    auto scanned = scan(codec::jobs_begin(), codec::jobs_end(),
                        [&](std::string_view key, std::string_view value) -> result<void> {
                          auto uuid = codec::job_uuid_from_key(key);
                          if (!uuid) return uuid.error();
                          auto j = codec::decode_job(value, std::move(*uuid));
                          if (!j) return j.error();
                          out.push_back(std::move(*j));
                          return {};
                        });
    if (!scanned) return scanned.error();
    return out;
  }

  result<void> flush() override {
    const rocksdb::Status s = db_->FlushWAL(/*sync=*/true);
    if (!s.ok()) return fail(log_, "syncing the index WAL", s);
    return {};
  }

 private:
  [[nodiscard]] result<void> validate(const job_change& change) const {
    const auto bad = [this](std::string_view why) {
      return fail(log_, "apply(): " + std::string(why), errc::invalid_argument);
    };
    const auto fits = [](std::string_view s) { return s.size() <= max_string_bytes; };
    if (!codec::is_storable(change.job_uuid)) return bad("job uuid is empty or holds a NUL");
    if (change.upsert_job) {
      if (change.upsert_job->uuid != change.job_uuid) {
        return bad("upsert_job.uuid \"" + codec::printable(change.upsert_job->uuid) +
                   "\" differs from job_uuid \"" + codec::printable(change.job_uuid) + "\"");
      }
      if (!fits(change.upsert_job->dir)) return bad("job dir too long");
    }
    for (const auto& c : change.upserts) {
      if (!codec::is_storable(c.path)) {
        return bad("checkpoint path \"" + codec::printable(c.path) + "\" is empty or holds a NUL");
      }
      if (!fits(c.identifier) || !fits(c.fingerprint)) return bad("checkpoint field too long");
    }
    for (const auto& path : change.removed_paths) {
      if (!codec::is_storable(path)) {
        return bad("removed path \"" + codec::printable(path) + "\" is empty or holds a NUL");
      }
    }
    return {};
  }

  // Visits every key in [begin, end) in order; stops at the first error. A
  // record that does not decode is reported with its key.
  template <class Visit>
  [[nodiscard]] result<void> scan(const std::string& begin, const std::string& end,
                                  Visit&& visit) const {
    const rocksdb::Slice upper(end);
    rocksdb::ReadOptions options;
    options.iterate_upper_bound = &upper;  // must outlive the iterator
    const std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options));
    for (it->Seek(begin); it->Valid(); it->Next()) {
      const std::string_view key = it->key().ToStringView();
      const std::string_view value = it->value().ToStringView();
      if (auto visited = visit(key, value); !visited) return corrupt_record(key, value);
    }
    if (!it->status().ok()) return fail(log_, "scanning the index", it->status());
    return {};
  }

  [[nodiscard]] error_code corrupt_record(std::string_view key, std::string_view value) const {
    return fail(log_,
                "index record \"" + codec::printable(key) + "\" does not decode (" +
                    std::to_string(value.size()) + " value bytes)",
                errc::corrupt);
  }

  dir_claim claim_;
  const log_sink log_;
  const std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace

result<std::unique_ptr<index>> index::open(const fs::path& dir, log_sink log) {
  const std::string name = dir.string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return fail(log, "cannot create index folder " + name + ": " + ec.message(), errc::io_error);
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return fail(log,
                "cannot stat index folder " + name + ": " + std::generic_category().message(errno),
                errc::io_error);
  }
  auto claim = dir_claim::acquire({st.st_dev, st.st_ino});
  if (!claim) return fail(log, "index " + name + " is already open in this process", errc::busy);

  const bool exists = fs::exists(dir / "CURRENT", ec);
  if (ec) {
    return fail(log, "cannot look into index folder " + name + ": " + ec.message(), errc::io_error);
  }
  const rocksdb::Options base = make_options(std::make_shared<sink_logger>(log));

  bool write_schema = !exists;
  if (exists) {
    if (const auto pid = lock_holder(dir / "LOCK")) {
      return fail(log, "index " + name + " is locked by process " + std::to_string(*pid),
                  errc::busy);
    }
    auto state = check_schema(name, base, log);
    if (!state) return state.error();
    if (*state == schema_state::empty_no_key) {
      emit(log, "index " + name + " is empty and has no schema key; adopting it");
      write_schema = true;
    }
  }

  rocksdb::Options options = base;
  options.create_if_missing = !exists;
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status opened = rocksdb::DB::Open(options, name, &raw);
  if (!opened.ok()) return fail(log, "cannot open index " + name, opened);
  std::unique_ptr<rocksdb::DB> db(raw);

  if (write_schema) {
    rocksdb::WriteOptions durable;
    durable.sync = true;  // the schema key is what makes the folder ckptd's
    const rocksdb::Status put =
        db->Put(durable, codec::schema_key(), codec::encode_schema(schema_version));
    if (!put.ok()) return fail(log, "cannot write the schema version of index " + name, put);
  }
  return std::unique_ptr<index>(
      std::make_unique<rocks_index>(std::move(*claim), std::move(db), std::move(log)));
}

}  // namespace ckptd::store
