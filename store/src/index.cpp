// The RocksDB shell around codec: opening (with the read-only schema check),
// the write batch for a job_change and its events, the scans, reopening after
// failed writes, and moving a damaged index aside.

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
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <limits>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

namespace ckptd::store {
namespace {

namespace fs = std::filesystem;
using boost::system::error_code;
using boost::system::result;
using namespace std::string_view_literals;

// Memory: ckptd must idle under ~30 MB RSS, and its data is small (a few
// hundred bytes per checkpoint), so every RocksDB budget is kept modest: the
// whole index of 100,000 checkpoints is about 17 MB, and a memtable's arena
// stays resident up to its size once filled, so 2 MiB buffers (not RocksDB's
// 64 MiB, nor 8) keep indexing from pinning memory the idle daemon never
// needs again.
constexpr std::size_t write_buffer_bytes = 2 << 20;
constexpr int max_write_buffers = 2;
constexpr std::size_t block_cache_bytes = 2 << 20;
constexpr int max_open_files = 256;
constexpr int max_background_jobs = 2;
// Level-0 files that start a compaction into level 1. In the default family
// each level-0 file spans most of the key range (job records are written
// between the checkpoints of other jobs), so such a compaction rewrites most
// of level 1: starting one per 12 files rather than RocksDB's 4 writes a
// third as much while a large tree is indexed, and reads merge at most a
// dozen small files meanwhile. (The event family's files never overlap: they
// move down as they are.)
constexpr int level0_files_per_compaction = 12;

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

  // While muted, lines are dropped: repeated reopens during one outage
  // would each log RocksDB's "DB::Open() failed".
  void set_muted(bool muted) noexcept { muted_.store(muted); }

  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (!sink_ || muted_.load() || level < rocksdb::InfoLogLevel::WARN_LEVEL ||
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
  std::atomic<bool> muted_{false};
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
  // RocksDB reserves (fallocate) write_buffer_size * 1.1 for each new WAL
  // file. With small buffers that reservation fits where a full volume
  // leaves room, and the failure then shows only at some later write, long
  // after the volume filled; without it a full volume fails the very next
  // write, is logged and turns /readyz 503 at once. The index's writes are
  // small enough that preallocating buys nothing.
  options.allow_fallocate = false;
  options.max_write_buffer_number = max_write_buffers;
  options.max_open_files = max_open_files;
  options.max_background_jobs = max_background_jobs;
  options.level0_file_num_compaction_trigger = level0_files_per_compaction;
  options.level0_slowdown_writes_trigger = 2 * level0_files_per_compaction;
  options.level0_stop_writes_trigger = 3 * level0_files_per_compaction;
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

// The event log has a column family of its own. Its keys only ever grow, so
// RocksDB appends each one next to the last in the memtable and moves its
// level-0 files down without rewriting them, where events mixed with
// checkpoint keys made every insert a search and every compaction a rewrite
// of both. Schema 1 kept events in the default family; open() moves them.
constexpr std::string_view events_family = "events";

// An open database and its column families' handles, which RocksDB needs
// released before the database closes (members go in reverse order).
struct database {
  std::unique_ptr<rocksdb::DB> db;
  std::unique_ptr<rocksdb::ColumnFamilyHandle> main;    // the default family
  std::unique_ptr<rocksdb::ColumnFamilyHandle> events;  // the event log

  explicit operator bool() const { return db != nullptr; }
  // Writes both families' memtables to table files, waiting for it.
  [[nodiscard]] rocksdb::Status write_memtables_out() const {
    return db->Flush(rocksdb::FlushOptions(), {main.get(), events.get()});
  }
  void reset() {
    events.reset();
    main.reset();
    db.reset();
  }
};

// Opens both families of `dir`. Writable opens create the event family when
// it is missing (an index of schema 1, or a new one).
[[nodiscard]] rocksdb::Status open_database(const rocksdb::Options& options, const std::string& dir,
                                            bool read_only, database& out) {
  const rocksdb::ColumnFamilyOptions family_options(options);
  const std::vector<rocksdb::ColumnFamilyDescriptor> families{
      {rocksdb::kDefaultColumnFamilyName, family_options},
      {std::string(events_family), family_options}};
  rocksdb::DBOptions db_options(options);
  db_options.create_missing_column_families = !read_only;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status s =
      read_only ? rocksdb::DB::OpenForReadOnly(db_options, dir, families, &handles, &raw)
                : rocksdb::DB::Open(db_options, dir, families, &handles, &raw);
  if (!s.ok()) return s;
  out.db.reset(raw);
  out.main.reset(handles.at(0));
  out.events.reset(handles.at(1));
  return s;
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

// What the read-only look found: a schema version, or (0) an empty
// database without a schema key, to adopt.
struct schema_state {
  std::uint32_t version = 0;
};

// The read-only look at an existing database. Nothing is written, so a
// refused folder stays exactly as it was.
[[nodiscard]] result<schema_state> check_schema(const std::string& dir,
                                                const rocksdb::Options& options,
                                                const index::log_sink& log) {
  // ckptd only ever creates the default and the event family. A read-only
  // open may leave others out, so they would otherwise go unnoticed, and
  // their database would pass for an empty one below.
  std::vector<std::string> families;
  const rocksdb::Status listed = rocksdb::DB::ListColumnFamilies(options, dir, &families);
  if (!listed.ok()) return fail(log, "cannot read the column families of index " + dir, listed);
  const std::string events_name(events_family);
  if (families != std::vector<std::string>{rocksdb::kDefaultColumnFamilyName} &&
      families != std::vector<std::string>{rocksdb::kDefaultColumnFamilyName, events_name}) {
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
    if (!it->Valid()) return schema_state{};
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
  return schema_state{*version};
}

// The event log's extent: the oldest retained seq (0 when the log is empty)
// and the last seq ever assigned (0 when none was).
struct event_range {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
};

[[nodiscard]] result<event_range> read_event_range(const database& d, const std::string& dir,
                                                   const index::log_sink& log) {
  rocksdb::DB& db = *d.db;
  event_range range;
  std::string value;
  const rocksdb::Status got = db.Get(rocksdb::ReadOptions(), codec::event_seq_key(), &value);
  if (got.ok()) {
    const auto last = codec::decode_event_seq(value);
    if (!last) {
      return fail(
          log,
          "index " + dir + " has a malformed event counter \"" + codec::printable(value) + "\"",
          errc::corrupt);
    }
    range.last = *last;
  } else if (!got.IsNotFound()) {
    return fail(log, "cannot read the event counter of index " + dir, got);
  }

  const std::string begin = codec::events_begin();
  const std::string end = codec::events_end();
  const rocksdb::Slice lower(begin);
  const rocksdb::Slice upper(end);
  rocksdb::ReadOptions options;
  options.iterate_lower_bound = &lower;  // both must outlive the iterator
  options.iterate_upper_bound = &upper;
  const std::unique_ptr<rocksdb::Iterator> it(db.NewIterator(options, d.events.get()));
  const auto seq_here = [&]() -> result<std::uint64_t> {
    const auto seq = codec::seq_from_event_key(it->key().ToStringView());
    if (!seq || *seq == 0) {
      return fail(log,
                  "index " + dir + " has a malformed event key \"" +
                      codec::printable(it->key().ToStringView()) + "\"",
                  errc::corrupt);
    }
    return *seq;
  };
  it->SeekToFirst();
  if (it->Valid()) {
    auto first = seq_here();
    if (!first) return first.error();
    range.first = *first;
    it->SeekToLast();
    if (it->Valid()) {
      // The counter is written in every batch that appends, so the two agree;
      // the larger one wins all the same, because reusing a seq would make a
      // reconnecting client skip an event.
      auto last = seq_here();
      if (!last) return last.error();
      range.last = std::max(range.last, *last);
    }
  }
  if (!it->status().ok()) return fail(log, "cannot scan the events of index " + dir, it->status());
  return range;
}

// Moves schema 1's events from the default family into their own. Each batch
// moves its events atomically, so a crash leaves every event in exactly one
// family, and the next open moves the rest.
[[nodiscard]] result<void> move_events_to_their_family(const database& d, const std::string& dir,
                                                       const index::log_sink& log) {
  constexpr std::size_t events_per_batch = 1000;
  const std::string begin = codec::events_begin();
  const std::string end = codec::events_end();
  const rocksdb::Slice upper(end);
  rocksdb::ReadOptions options;
  options.iterate_upper_bound = &upper;  // must outlive the iterator
  // The iterator reads a snapshot: the deletes written meanwhile do not
  // move it.
  const std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator(options, d.main.get()));
  std::uint64_t moved = 0;
  rocksdb::WriteBatch batch;
  rocksdb::Status s;
  const auto write = [&] {
    if (s.ok() && batch.Count() > 0) s = d.db->Write(rocksdb::WriteOptions(), &batch);
    batch.Clear();
  };
  for (it->Seek(begin); it->Valid() && s.ok(); it->Next()) {
    s = batch.Put(d.events.get(), it->key(), it->value());
    if (s.ok()) s = batch.Delete(d.main.get(), it->key());
    if (++moved % events_per_batch == 0) write();
  }
  write();
  if (!it->status().ok()) return fail(log, "cannot read the events of index " + dir, it->status());
  if (!s.ok()) return fail(log, "moving the events of index " + dir + " to their own family", s);
  if (moved > 0) {
    emit(log, "index " + dir + ": moved " + std::to_string(moved) +
                  " events to a column family of their own (schema 2)");
  }
  return {};
}

[[nodiscard]] std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// What the index currently has open. After a failed write it reopens the
// database; when that cannot open it for writing it opens it read-only, and
// when even that fails it has nothing open and reads fail too.
enum class db_mode { read_write, read_only, closed };

class rocks_index final : public index {
 public:
  rocks_index(dir_claim claim, std::string dir, rocksdb::Options options,
              database db, log_sink log, open_options opts, event_range events)
      : claim_(std::move(claim)),
        dir_(std::move(dir)),
        options_(std::move(options)),
        log_(std::move(log)),
        retention_(opts.event_retention),
        // Trimming is amortized: the log may grow 1% past the bound (at least
        // one event) before one range tombstone cuts it back to the bound.
        trim_slack_(std::max<std::uint64_t>(1, opts.event_retention / 100)),
        first_seq_(events.first),
        last_seq_(events.last),
        db_(std::move(db)) {}

  rocks_index(const rocks_index&) = delete;
  rocks_index& operator=(const rocks_index&) = delete;

  ~rocks_index() override {
    const std::lock_guard write(write_mutex_);
    const std::unique_lock lock(db_mutex_);
    close_locked(/*sync=*/true);
    // claim_ is destroyed after this body, so the folder is released only
    // once RocksDB has let go of its LOCK file.
  }

  result<std::uint64_t> apply(const job_change& change) override {
    if (auto valid = validate(change); !valid) return valid.error();
    if (!change.remove_job && !change.upsert_job && change.upserts.empty() &&
        change.removed_paths.empty() && change.events.empty()) {
      return 0;
    }
    const std::string& uuid = change.job_uuid;

    // One writer at a time: seqs must commit in the order they are assigned,
    // or a reader could see seq n+1 before n and a client resuming after n+1
    // would never get n.
    const std::lock_guard write(write_mutex_);
    if (needs_reopen_) {
      if (auto reopened = reopen_locked(); !reopened) return reopened.error();
    }

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

    // Events: seqs are only taken once the write succeeds, so a failed write
    // uses none up.
    std::uint64_t seq = last_seq_.load();
    std::uint64_t first = first_seq_.load();
    if (!change.events.empty()) {
      const std::int64_t now = now_ns();
      for (const auto& e : change.events) {
        const std::string_view job = e.job_uuid.empty() ? std::string_view(uuid) : e.job_uuid;
        step(batch.Put(db_events(), codec::event_key(++seq),
                       codec::encode_event(e, job, e.at_ns == 0 ? now : e.at_ns)));
      }
      step(batch.Put(codec::event_seq_key(), codec::encode_event_seq(seq)));
      if (first == 0) first = seq - change.events.size() + 1;
      if (seq - first + 1 > retention_ + trim_slack_) {
        // Last in the batch, so it also covers events this very change
        // appended when it alone holds more than the bound. The range starts
        // at the first possible key rather than at `first`, so nothing older
        // can be left behind whatever happened before.
        first = seq - retention_ + 1;
        step(batch.DeleteRange(db_events(), codec::events_begin(), codec::event_key(first)));
      }
    }
    if (!s.ok()) return fail(log_, "building the write batch for job " + uuid, s);

    // WAL on, no sync: the write survives a crash of ckptd; flush() makes it
    // survive a power loss too.
    {
      const std::shared_lock lock(db_mutex_);
      if (mode_ != db_mode::read_write) {
        return fail(log_, "writing a change to job " + uuid + ": the index is not open for writing",
                    errc::io_error);
      }
      s = db_.db->Write(rocksdb::WriteOptions(), &batch);
    }
    if (!s.ok()) return write_failed("writing a change to job " + uuid, s);
    last_seq_.store(seq);
    first_seq_.store(first);
    if (!healthy_.exchange(true)) {
      reopen_failure_logged_ = false;
      emit(log_, "index " + dir_ + ": writes work again");
    }
    return change.events.empty() ? 0 : seq;
  }

  result<std::vector<checkpoint>> checkpoints(std::string_view job_uuid) const override {
    if (!codec::is_storable(job_uuid)) {
      return fail(log_, "checkpoints(): job uuid is empty or holds a NUL", errc::invalid_argument);
    }
    const std::string prefix = codec::checkpoint_prefix(job_uuid);
    std::vector<checkpoint> out;
    auto scanned = scan(family::main, prefix, codec::checkpoint_prefix_end(job_uuid),
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
    rocksdb::Status s;
    {
      const std::shared_lock lock(db_mutex_);
      if (!db_) return not_open();
      s = db_.db->Get(rocksdb::ReadOptions(), key, &value);
    }
    if (s.IsNotFound()) return std::optional<job>();
    if (!s.ok()) return fail(log_, "reading job " + std::string(job_uuid), s);
    auto j = codec::decode_job(value, std::string(job_uuid));
    if (!j) return corrupt_record(key, value);
    return std::optional<job>(std::move(*j));
  }

  result<std::vector<job>> jobs() const override {
    std::vector<job> out;
    auto scanned = scan(family::main, codec::jobs_begin(), codec::jobs_end(),
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
    return write_whole("syncing the index WAL",
                       [](const database& d) { return d.db->FlushWAL(/*sync=*/true); });
  }

  result<void> start_events_after(std::uint64_t seq) override {
    if (seq == 0) return fail(log_, "start_events_after(0)", errc::invalid_argument);
    bool had_seqs = false;
    auto written = write_whole("starting the event log", [&](const database& d) {
      // Under the write lock, so no apply() takes a seq meanwhile.
      if (last_seq_.load() != 0) {
        had_seqs = true;
        return rocksdb::Status::OK();
      }
      rocksdb::WriteOptions durable;
      durable.sync = true;
      auto s = d.db->Put(durable, d.main.get(), codec::event_seq_key(),
                         codec::encode_event_seq(seq));
      if (s.ok()) last_seq_.store(seq);
      return s;
    });
    if (!written) return written.error();
    if (had_seqs) {
      return fail(log_, "the event log already has seqs: it cannot start after another one",
                  errc::invalid_argument);
    }
    return {};
  }

  result<void> write_out() override {
    return write_whole("writing the index memtables out",
                       [](const database& d) { return d.write_memtables_out(); });
  }

  result<std::vector<event>> events_after(std::uint64_t seq, std::size_t limit) const override {
    std::vector<event> out;
    if (limit == 0 || seq == std::numeric_limits<std::uint64_t>::max()) return out;
    // Reserve for a typical page, not for whatever limit a caller passes.
    out.reserve(std::min<std::size_t>(limit, 256));
    auto scanned = scan(
        family::events, codec::event_key(seq + 1), codec::events_end(),
        [&](std::string_view key, std::string_view value) -> result<void> {
          auto found = codec::seq_from_event_key(key);
          if (!found) return found.error();
          auto e = codec::decode_event(value, *found);
          if (!e) return e.error();
          out.push_back(std::move(*e));
          return {};
        },
        limit);
    if (!scanned) return scanned.error();
    return out;
  }

  std::uint64_t last_event_seq() const override { return last_seq_.load(); }
  std::uint64_t first_event_seq() const override { return first_seq_.load(); }
  bool healthy() const override { return healthy_.load(); }

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
    for (const auto& e : change.events) {
      if (!e.job_uuid.empty() && e.job_uuid != change.job_uuid) {
        return bad("event job_uuid \"" + codec::printable(e.job_uuid) +
                   "\" differs from job_uuid \"" + codec::printable(change.job_uuid) + "\"");
      }
      // The type becomes an SSE "event:" line, which a line break would end.
      if (e.type.empty() || e.type.find_first_of("\0\r\n"sv) != std::string::npos) {
        return bad("event type \"" + codec::printable(e.type) +
                   "\" is empty or holds NUL, CR or LF");
      }
      if (!fits(e.type) || !fits(e.data)) return bad("event field too long");
    }
    return {};
  }

  // Marks the index unhealthy after a failed write and logs why. The database
  // stays open, so reads go on from it; the next write reopens it first.
  // Only the first failure of an outage is logged: a caller retrying every
  // few seconds on a full volume would otherwise log each attempt.
  [[nodiscard]] error_code write_failed(std::string_view what, const rocksdb::Status& s) {
    needs_reopen_ = true;
    if (!healthy_.exchange(false)) return make_error_code(to_errc(s));
    const error_code ec = fail(log_, what, s);
    emit(log_, "index " + dir_ +
                   ": writes are failing; serving what is indexed, and the next write "
                   "reopens the index (" +
                   ec.message() + ")");
    return ec;
  }

  // Closes the database and opens it again. Precondition: write_mutex_ held.
  // RocksDB 7.8 answers Resume() after a failed WAL write on a full volume
  // with "Resource busy" for as long as the process lives, while a fresh open
  // replays the WAL up to the last complete record (the torn one the failed
  // write left is dropped) and works as soon as there is space again. Readers
  // wait for the reopen, which replays at most a few MB of WAL.
  [[nodiscard]] result<void> reopen_locked() {
    const std::unique_lock lock(db_mutex_);
    close_locked(/*sync=*/false);

    rocksdb::Options options = options_;
    options.create_if_missing = false;
    auto* logger = dynamic_cast<sink_logger*>(options_.info_log.get());
    if (logger != nullptr) logger->set_muted(reopen_failure_logged_);
    const rocksdb::Status opened = open_database(options, dir_, /*read_only=*/false, db_);
    if (logger != nullptr) logger->set_muted(false);
    if (opened.ok()) {
      mode_ = db_mode::read_write;
      // Seqs come from the database again, as at open: the failed write may
      // have reached the WAL after all. They never go back, though.
      auto events = read_event_range(db_, dir_, log_);
      if (!events) return events.error();  // still needs_reopen_: try again next time
      last_seq_.store(std::max(last_seq_.load(), events->last));
      first_seq_.store(events->first);
      needs_reopen_ = false;
      return {};
    }
    // Logged once per outage, like the failed write before it.
    const error_code ec = std::exchange(reopen_failure_logged_, true)
                              ? make_error_code(to_errc(opened))
                              : fail(log_, "cannot reopen index " + dir_ + " for writing", opened);

    // Keep serving reads. RocksDB calls a read-only open next to a live
    // writer undefined behaviour, so not if somebody took the lock meanwhile.
    if (const auto pid = lock_holder(fs::path(dir_) / "LOCK")) {
      emit(log_, "index " + dir_ + " was locked by process " + std::to_string(*pid) +
                     " while reopening; it stays closed");
      return ec;
    }
    const rocksdb::Status read_only = open_database(options, dir_, /*read_only=*/true, db_);
    if (read_only.ok()) {
      mode_ = db_mode::read_only;
    } else {
      std::ignore = fail(log_, "cannot reopen index " + dir_ + " read-only either", read_only);
    }
    return ec;
  }

  // Precondition: db_mutex_ held exclusively.
  void close_locked(bool sync) {
    if (!db_) return;
    if (sync && mode_ == db_mode::read_write) {
      // A clean shutdown leaves everything applied durable. The memtable is
      // written out too: otherwise the next start replays the WAL twice (the
      // read-only schema check, then the real open), which took a third of
      // a restart's CPU with 10,000 checkpoints. The WAL is synced first, so
      // a failed flush loses nothing.
      if (const auto s = db_.db->FlushWAL(/*sync=*/true); !s.ok()) {
        emit(log_, "syncing the index WAL at close: " + s.ToString());
      } else if (const auto f = db_.write_memtables_out(); !f.ok()) {
        emit(log_, "writing the index memtables at close: " + f.ToString());
      }
    }
    // The handles go before the database closes, as RocksDB requires.
    db_.main.reset();
    db_.events.reset();
    if (const auto s = db_.db->Close(); !s.ok()) {
      emit(log_, "closing the index: " + s.ToString());
    }
    db_.reset();
    mode_ = db_mode::closed;
  }

  [[nodiscard]] error_code not_open() const {
    return fail(log_, "index " + dir_ + " is not open: reopening it after failed writes failed",
                errc::io_error);
  }

  // A write to the whole database (`what` it does, for the log): serialized
  // with apply(), and like it reopening after a failed write first.
  template <class Write>
  [[nodiscard]] result<void> write_whole(std::string_view what, Write&& write) {
    const std::lock_guard lock_writes(write_mutex_);
    if (needs_reopen_) {
      if (auto reopened = reopen_locked(); !reopened) return reopened.error();
    }
    rocksdb::Status s;
    {
      const std::shared_lock lock(db_mutex_);
      if (mode_ != db_mode::read_write) {
        return fail(log_, std::string(what) + ": the index is not open for writing",
                    errc::io_error);
      }
      s = write(db_);
    }
    if (!s.ok()) return write_failed(what, s);
    return {};
  }

  enum class family { main, events };

  // The event family's handle, for a batch built under write_mutex_ (which
  // keeps the database from being swapped meanwhile).
  [[nodiscard]] rocksdb::ColumnFamilyHandle* db_events() const { return db_.events.get(); }

  // Visits every key of `in` in [begin, end) in order, at most `limit` of
  // them; stops at the first error. A record that does not decode is
  // reported with its key.
  template <class Visit>
  [[nodiscard]] result<void> scan(
      family in, const std::string& begin, const std::string& end, Visit&& visit,
      std::size_t limit = std::numeric_limits<std::size_t>::max()) const {
    const rocksdb::Slice upper(end);
    rocksdb::ReadOptions options;
    options.iterate_upper_bound = &upper;  // must outlive the iterator
    const std::shared_lock lock(db_mutex_);
    if (!db_) return not_open();
    const std::unique_ptr<rocksdb::Iterator> it(db_.db->NewIterator(
        options, in == family::events ? db_.events.get() : db_.main.get()));
    std::size_t visited = 0;
    for (it->Seek(begin); it->Valid() && visited < limit; it->Next(), ++visited) {
      const std::string_view key = it->key().ToStringView();
      const std::string_view value = it->value().ToStringView();
      if (auto ok = visit(key, value); !ok) return corrupt_record(key, value);
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

  const dir_claim claim_;
  const std::string dir_;
  const rocksdb::Options options_;  // what open() used, for reopening
  const log_sink log_;
  const std::uint64_t retention_;
  const std::uint64_t trim_slack_;

  // Serializes apply() and flush() (and so every reopen), and guards
  // needs_reopen_. Taken before db_mutex_.
  std::mutex write_mutex_;
  bool needs_reopen_ = false;
  bool reopen_failure_logged_ = false;  // this outage's failed reopen is logged
  // Written under write_mutex_, read by anyone.
  std::atomic<std::uint64_t> first_seq_;
  std::atomic<std::uint64_t> last_seq_;
  std::atomic<bool> healthy_{true};

  // Shared by every RocksDB call, exclusive while the database is swapped.
  mutable std::shared_mutex db_mutex_;
  database db_;
  db_mode mode_ = db_mode::read_write;
};

// Today as "20240229T120000Z".
[[nodiscard]] std::string utc_stamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buffer[32];
  const std::size_t n = std::strftime(buffer, sizeof buffer, "%Y%m%dT%H%M%SZ", &tm);
  return std::string(buffer, n);
}

[[nodiscard]] std::string errno_text(int e) { return std::generic_category().message(e); }

}  // namespace

result<std::unique_ptr<index>> index::open(const fs::path& dir, log_sink log, open_options opts) {
  const std::string name = dir.string();
  if (opts.event_retention == 0) {
    return fail(log, "index " + name + ": event_retention must be at least 1",
                errc::invalid_argument);
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return fail(log, "cannot create index folder " + name + ": " + ec.message(), errc::io_error);
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return fail(log, "cannot stat index folder " + name + ": " + errno_text(errno), errc::io_error);
  }
  auto claim = dir_claim::acquire({st.st_dev, st.st_ino});
  if (!claim) return fail(log, "index " + name + " is already open in this process", errc::busy);

  const bool exists = fs::exists(dir / "CURRENT", ec);
  if (ec) {
    return fail(log, "cannot look into index folder " + name + ": " + ec.message(), errc::io_error);
  }
  const rocksdb::Options base = make_options(std::make_shared<sink_logger>(log));

  std::uint32_t found_version = 0;  // none: a new index, or an empty one to adopt
  if (exists) {
    if (const auto pid = lock_holder(dir / "LOCK")) {
      return fail(log, "index " + name + " is locked by process " + std::to_string(*pid),
                  errc::busy);
    }
    auto state = check_schema(name, base, log);
    if (!state) return state.error();
    found_version = state->version;
    if (found_version == 0) {
      emit(log, "index " + name + " is empty and has no schema key; adopting it");
    }
  }

  rocksdb::Options options = base;
  options.create_if_missing = !exists;
  database db;
  const rocksdb::Status opened = open_database(options, name, /*read_only=*/false, db);
  if (!opened.ok()) return fail(log, "cannot open index " + name, opened);

  if (found_version < schema_version) {
    if (found_version == 1) {
      if (auto moved = move_events_to_their_family(db, name, log); !moved) return moved.error();
    }
    rocksdb::WriteOptions durable;
    durable.sync = true;  // the schema key is what makes the folder ckptd's
    const rocksdb::Status put =
        db.db->Put(durable, codec::schema_key(), codec::encode_schema(schema_version));
    if (!put.ok()) return fail(log, "cannot write the schema version of index " + name, put);
  }
  auto events = read_event_range(db, name, log);
  if (!events) return events.error();
  return std::unique_ptr<index>(std::make_unique<rocks_index>(
      std::move(*claim), name, base, std::move(db), std::move(log), opts, *events));
}

result<fs::path> index::move_aside(const fs::path& dir, log_sink log) {
  std::error_code ec;
  // The real folder, not a symlink to it: the index is rebuilt where it was.
  fs::path given = fs::absolute(dir, ec).lexically_normal();
  if (!given.has_filename()) given = given.parent_path();  // "/x/index/" is "/x/index"
  const fs::path from = ec ? fs::path() : fs::canonical(given, ec);
  if (ec) {
    return fail(log, "cannot move index folder " + dir.string() + " aside: " + ec.message(),
                errc::io_error);
  }
  if (!fs::is_directory(from, ec) || from == from.root_path()) {
    return fail(log, "cannot move " + from.string() + " aside: not an index folder",
                errc::io_error);
  }
  struct stat st {};
  if (::stat(from.c_str(), &st) != 0) {
    return fail(log, "cannot stat index folder " + from.string() + ": " + errno_text(errno),
                errc::io_error);
  }
  // Held through the rename, so that no open() in this process starts on the
  // folder meanwhile; RocksDB would go on writing to the old paths.
  const auto claim = dir_claim::acquire({st.st_dev, st.st_ino});
  if (!claim) {
    return fail(log, "cannot move index " + from.string() + " aside: it is open in this process",
                errc::busy);
  }
  if (const auto pid = lock_holder(from / "LOCK")) {
    return fail(log,
                "cannot move index " + from.string() + " aside: it is locked by process " +
                    std::to_string(*pid),
                errc::busy);
  }

  const std::string base = from.string() + ".broken-" + utc_stamp();
  constexpr int max_attempts = 1000;
  for (int n = 1; n <= max_attempts; ++n) {
    const fs::path to = n == 1 ? fs::path(base) : fs::path(base + "-" + std::to_string(n));
    // RENAME_NOREPLACE: a plain rename() would silently replace an empty
    // folder of that name, and checking first would race.
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) != 0) {
      const int e = errno;
      if (e == EEXIST) continue;
      return fail(log,
                  "cannot rename index folder " + from.string() + " to " + to.string() + ": " +
                      errno_text(e),
                  errc::io_error);
    }
    // Make the rename durable before a new index is created in its place.
    if (const int fd = ::open(from.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
    // When `dir` was a symlink, leave an empty folder where it points so that
    // it resolves again and open() rebuilds the index on the same volume.
    if (from != given) {
      fs::create_directory(from, ec);
      if (ec) emit(log, "cannot recreate index folder " + from.string() + ": " + ec.message());
    }
    emit(log, "moved index folder " + from.string() + " aside to " + to.string());
    return to;
  }
  return fail(log,
              "cannot move index folder " + from.string() + " aside: " + base +
                  " and its numbered variants all exist",
              errc::io_error);
}

}  // namespace ckptd::store
