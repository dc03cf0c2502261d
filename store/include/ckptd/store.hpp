#pragma once
// ckptd::store — the persistent index of jobs and their checkpoints, in RocksDB.
//
// The filesystem is the source of truth; this index is what ckptd knows of it,
// kept so that a restart serves at once and keeps each checkpoint's created_at.
// Keys are laid out so that one job's checkpoints are one ordered prefix scan,
// and every change is one atomic write batch. Each change may carry events,
// which the index numbers and keeps (a bounded log) so that a push client that
// reconnects can ask for everything after the last event it saw.
//
// Thread-safety: an `index` may be used from any number of threads at once.
// Writes (apply, flush) are serialized inside; reads run concurrently with
// them and with each other, and only wait while the index reopens its
// database after a failed write (see apply()).

#include <boost/system/result.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckptd::store {

// Metrics as llama-stack's PostTrainingMetric: all four or none.
struct training_metrics {
  std::int64_t epoch = 0;
  double train_loss = 0;
  double validation_loss = 0;
  double perplexity = 0;
  friend bool operator==(const training_metrics&, const training_metrics&) = default;
};

struct checkpoint {
  std::string path;        // absolute path of the checkpoint folder or file; unique key in a job
  std::string identifier;  // what the API shows: normally the folder or file name
  std::int64_t epoch = 0;
  std::int64_t step = -1;          // -1 when the layout has no step; orders within an epoch
  std::int64_t created_at_ns = 0;  // when it completed: ns since the Unix epoch, UTC
  std::optional<training_metrics> metrics;
  // Opaque evidence of completion (e.g. the marker file's size and mtime). A
  // different fingerprint for the same path means the checkpoint was rewritten.
  std::string fingerprint;
  // Opaque to the store: a hash of what the watcher judged the checkpoint
  // from (its folder's listing), so that a restart can take a checkpoint
  // whose listing is unchanged as judged without reading its files again.
  // 0 when unknown.
  std::uint64_t listing_hash = 0;
  friend bool operator==(const checkpoint&, const checkpoint&) = default;
};

struct job {
  std::string uuid;
  std::string dir;                 // absolute path of the job's folder
  std::int64_t first_seen_ns = 0;  // when ckptd first saw the folder
  // What the folder shows of the job's progress (see the watcher's status
  // rules): "scheduled", "in_progress", "completed", "failed" or "cancelled";
  // empty when not yet judged. Times are ns since the Unix epoch, 0 if unknown.
  std::string status;
  std::int64_t started_at_ns = 0;
  std::int64_t completed_at_ns = 0;
  friend bool operator==(const job&, const job&) = default;
};

// One entry of the event log behind push notifications (Server-Sent Events).
struct event {
  // Assigned by apply(): consecutive from 1 in the order changes commit, never
  // reused, and kept across restarts and crashes. apply() ignores the
  // caller's value.
  std::uint64_t seq = 0;
  // The job it is about. Empty in a job_change means that change's job_uuid;
  // events read back always carry it.
  std::string job_uuid;
  // "checkpoint.created" | "checkpoint.deleted" | "job.status". Not empty, and
  // no NUL, CR or LF (it becomes an SSE "event:" line); otherwise opaque.
  std::string type;
  std::string data;  // JSON text; opaque to the store
  // When it happened: ns since the Unix epoch, UTC. 0 in a job_change means
  // "now": apply() stamps the time it writes the change.
  std::int64_t at_ns = 0;
  friend bool operator==(const event&, const event&) = default;
};

// Everything that changes about one job, applied atomically.
struct job_change {
  std::string job_uuid;
  std::optional<job> upsert_job;           // create or update the job record
  bool remove_job = false;                 // drop the job and all its checkpoints
  std::vector<checkpoint> upserts;         // insert or replace, keyed by path
  std::vector<std::string> removed_paths;  // checkpoints to drop, by path
  std::vector<event> events;               // appended to the event log, in this order
};

// How many of the newest events the log keeps. Trimming is amortized: the
// log holds between `event_retention` and `event_retention` + 1% events
// (at least one more) before the oldest are dropped down to exactly
// `event_retention`, in the same write batch as the change that appends.
// 100,000 events of a few hundred bytes each is some tens of MB on disk at
// most, and days of history for even a busy set of training jobs.
inline constexpr std::uint64_t default_event_retention = 100'000;

struct open_options {
  // The retention bound of the event log, in events; must be at least 1.
  // Default: default_event_retention (100,000).
  std::uint64_t event_retention = default_event_retention;
};

enum class errc {
  newer_schema = 1,  // the database was written by a newer ckptd
  unknown_schema,    // the folder holds a database ckptd did not write
  corrupt,           // RocksDB reports corruption
  io_error,          // the disk failed or is full
  busy,              // another process holds the database lock
  invalid_argument,  // a caller passed something the index cannot hold
};
[[nodiscard]] const boost::system::error_category& category() noexcept;
[[nodiscard]] boost::system::error_code make_error_code(errc e) noexcept;

class index {
 public:
  // The layout version this build reads and writes. 2: the event log has a
  // column family of its own; open() moves the events of a version 1 index.
  static constexpr std::uint32_t schema_version = 2;

  // Receives RocksDB's own warnings and the causes behind returned errors,
  // one line each. RocksDB's info LOG file is never written: on a full volume
  // its first failed write would abort the process.
  // The sink is also called from RocksDB's background threads, so it must be
  // thread-safe and quick, and must not call back into the index; an
  // exception it throws is swallowed.
  using log_sink = std::function<void(std::string_view line)>;

  // Opens (creating when absent) the index in `dir`. Before anything is
  // written, the schema version is read through a read-only open, so a
  // database from a newer ckptd or a damaged one is refused untouched.
  // A folder without a database (no CURRENT file) gets a new one; an existing
  // database with no schema key and no keys at all (ckptd stopped between
  // creating it and writing the key) is adopted.
  // Errors: newer_schema, unknown_schema, corrupt, busy, io_error;
  // invalid_argument when options.event_retention is 0.
  [[nodiscard]] static boost::system::result<std::unique_ptr<index>> open(
      const std::filesystem::path& dir, log_sink log = {}, open_options options = {});

  // Renames the index folder `dir` to "<dir>.broken-<UTC time>" (for example
  // "/var/lib/ckptd/index.broken-20240229T120000Z", with "-2", "-3"... added
  // if that name is taken) so that open() can start a fresh index in `dir`
  // and the watcher rebuild it from the checkpoint folders. Nothing is ever
  // deleted or overwritten; the old folder stays for inspection. Use it when
  // open() refuses the folder with newer_schema or corrupt.
  // Returns the folder's new path.
  // Errors: busy when the index is open in this process or locked by another;
  // io_error when `dir` does not exist or cannot be renamed (the cause goes
  // to `log`).
  [[nodiscard]] static boost::system::result<std::filesystem::path> move_aside(
      const std::filesystem::path& dir, log_sink log = {});

  virtual ~index() = default;

  // Applies one change in a single write batch: all of it or none, events
  // included. Deletions apply before puts, so remove_job together with
  // upsert_job and upserts replaces the job wholesale, and a path both removed
  // and upserted ends up upserted. Durable against a crash of ckptd (kill -9
  // included), not a power loss (see flush()).
  // Returns the seq assigned to the change's last event, so its events hold
  // seq (returned - events.size(), returned]; 0 when it has no events.
  //
  // Failed writes heal themselves. When a write fails (a full volume, an I/O
  // error), the failure is logged, healthy() turns false, and the database
  // stays open for reads, so everything indexed so far is still served. The
  // next apply() (or flush()) closes and reopens the database once, then
  // retries the write; once space has returned that succeeds and healthy()
  // turns true again. (RocksDB's own Resume() does not recover from a full
  // volume in the RocksDB ckptd uses; a reopen does.) While a reopen cannot
  // open the database for writing, it is opened read-only, so reads go on.
  // Callers need only retry a failed change later, as they would anyway.
  //
  // Errors: invalid_argument, with nothing written, when job_uuid or a path is
  // empty or holds a NUL, upsert_job->uuid or an event's job_uuid differs
  // from job_uuid, or an event's type is empty or holds NUL, CR or LF;
  // io_error when the write (or the reopen before it) fails, or busy or
  // corrupt when that reopen finds the folder locked by another process or
  // damaged: nothing of the change is written, and no seq is used up.
  [[nodiscard]] virtual boost::system::result<std::uint64_t> apply(const job_change& change) = 0;

  // All checkpoints of a job, in key order (by path), from one prefix scan.
  // An unknown job yields an empty vector.
  // Errors: invalid_argument for a uuid that is empty or holds a NUL; corrupt
  // when a stored record does not decode; io_error.
  [[nodiscard]] virtual boost::system::result<std::vector<checkpoint>> checkpoints(
      std::string_view job_uuid) const = 0;

  // The job's record; nullopt when the job is unknown.
  // Errors: as checkpoints().
  [[nodiscard]] virtual boost::system::result<std::optional<job>> find_job(
      std::string_view job_uuid) const = 0;

  // Every known job, ordered by uuid (bytewise). Errors: corrupt, io_error.
  [[nodiscard]] virtual boost::system::result<std::vector<job>> jobs() const = 0;

  // Makes everything applied so far durable (WAL sync). apply() alone survives
  // a process crash; this also survives a power loss. After a failed write it
  // first reopens the database, as apply() does.
  // Errors: io_error.
  [[nodiscard]] virtual boost::system::result<void> flush() = 0;

  // Writes what the memtables hold out to table files, which frees their
  // memory (a few MB): for after a burst of writes, such as the first scan,
  // so that an idle daemon does not keep it. Like flush(), it makes
  // everything applied so far durable, and reopens after a failed write.
  // Errors: io_error.
  [[nodiscard]] virtual boost::system::result<void> write_out() = 0;

  // Up to `limit` events with seq greater than `seq`, ascending, from one
  // range scan. Pass 0 to read from the oldest retained event, and then the
  // last seq received to page on. An empty vector means nothing newer.
  // A client that asks for events after L has missed some exactly when the
  // result is not empty and its first seq is not L + 1 (they were trimmed by
  // retention; see first_event_seq()). An L above last_event_seq() did not
  // come from this index (it was rebuilt, so its seqs restarted from 1): such
  // a client should resynchronize from scratch.
  // Errors: corrupt when a stored event does not decode; io_error.
  [[nodiscard]] virtual boost::system::result<std::vector<event>> events_after(
      std::uint64_t seq, std::size_t limit) const = 0;

  // The seq of the newest event, or 0 when none was ever written.
  [[nodiscard]] virtual std::uint64_t last_event_seq() const = 0;

  // Makes a log that never held an event continue after `seq`: the next
  // event gets seq + 1, and last_event_seq() is `seq` meanwhile. For an index
  // that replaces one moved aside: its seqs then lie beyond the old one's, so
  // a client resuming with an old id is told to start over instead of being
  // resumed somewhere in the new numbering. Written with sync.
  // Errors: invalid_argument when `seq` is 0 or the log already has a seq;
  // io_error.
  [[nodiscard]] virtual boost::system::result<void> start_events_after(std::uint64_t seq) = 0;

  // The seq of the oldest retained event, or 0 when the log is empty. A client
  // whose last seen seq is below first_event_seq() - 1 fell behind the
  // retention window.
  [[nodiscard]] virtual std::uint64_t first_event_seq() const = 0;

  // False from a failed write until a write succeeds again (see apply());
  // reads keep working meanwhile. For /readyz and /metrics.
  [[nodiscard]] virtual bool healthy() const = 0;
};

}  // namespace ckptd::store

template <>
struct boost::system::is_error_code_enum<ckptd::store::errc> : std::true_type {};
