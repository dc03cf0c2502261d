#pragma once
// ckptd::store — the persistent index of jobs and their checkpoints, in RocksDB.
//
// The filesystem is the source of truth; this index is what ckptd knows of it,
// kept so that a restart serves at once and keeps each checkpoint's created_at.
// Keys are laid out so that one job's checkpoints are one ordered prefix scan,
// and every change is one atomic write batch.
//
// Thread-safety: an `index` may be used from any number of threads at once.

#include <boost/system/result.hpp>

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
  friend bool operator==(const checkpoint&, const checkpoint&) = default;
};

struct job {
  std::string uuid;
  std::string dir;                 // absolute path of the job's folder
  std::int64_t first_seen_ns = 0;  // when ckptd first saw the folder
  friend bool operator==(const job&, const job&) = default;
};

// Everything that changes about one job, applied atomically.
struct job_change {
  std::string job_uuid;
  std::optional<job> upsert_job;           // create or update the job record
  bool remove_job = false;                 // drop the job and all its checkpoints
  std::vector<checkpoint> upserts;         // insert or replace, keyed by path
  std::vector<std::string> removed_paths;  // checkpoints to drop, by path
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
  // The layout version this build reads and writes.
  static constexpr std::uint32_t schema_version = 1;

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
  // Errors: newer_schema, unknown_schema, corrupt, busy, io_error.
  [[nodiscard]] static boost::system::result<std::unique_ptr<index>> open(
      const std::filesystem::path& dir, log_sink log = {});

  virtual ~index() = default;

  // Applies one change in a single write batch: all of it or none.
  // Deletions apply before puts, so remove_job together with upsert_job and
  // upserts replaces the job wholesale, and a path both removed and upserted
  // ends up upserted. Durable against a crash of ckptd, not a power loss
  // (see flush()).
  // Errors: invalid_argument, with nothing written, when job_uuid or a path is
  // empty or holds a NUL, or upsert_job->uuid differs from job_uuid; io_error.
  [[nodiscard]] virtual boost::system::result<void> apply(const job_change& change) = 0;

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
  // a process crash; this also survives a power loss.
  [[nodiscard]] virtual boost::system::result<void> flush() = 0;
};

}  // namespace ckptd::store

template <>
struct boost::system::is_error_code_enum<ckptd::store::errc> : std::true_type {};
