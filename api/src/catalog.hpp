#pragma once
// The bodies the server answers with, ready to send.
//
// A catalog maps each known job to its finished artifacts and status bodies
// and keeps the job list body beside them, so a request is a map lookup and a
// write: it never reads the store and never serializes. Entries are immutable
// and shared, so a response being written keeps its body alive while a newer
// one replaces it.
//
// With a byte budget, only the most recently used jobs keep their bodies; the
// others keep just their ETags and sizes (enough for a 304, a long-poll and
// the job list) until restore() puts bodies rebuilt from the store back.
//
// Thread-safety: none; the server keeps its catalog on the io_context's thread
// and hands it bodies built elsewhere.

#include <ckptd/api.hpp>
#include <ckptd/store.hpp>

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ckptd::api {

// Bodies at least this large may be sent gzip-compressed. Default: 1 KiB;
// below that the headers outweigh what compression saves.
constexpr std::size_t gzip_min_bytes = 1024;

// One body, ready to send: `bytes`, then tail(). Most bodies are all `bytes`.
// A job's status body ends with the very checkpoints array its artifacts body
// ends with, so it keeps only its own head and points into the artifacts body
// for the rest (make_status_body): each job's checkpoints are held once.
//
// The gzip encoding is not made with the body: most clients never ask for it,
// and compressing every version of a large job on every change cost more than
// all the rest of publishing it. gzip_bytes() makes it on first use and keeps
// it for the life of this body (i.e. until the job changes).
//
// Thread-safety: build anywhere; once handed to the server, use it on one
// thread only (gzip_bytes() fills a cache).
struct cached_body {
  std::string bytes;  // the whole body, or its head when shared_tail is set
  std::shared_ptr<const cached_body> shared_tail;  // the body goes on with
  std::size_t tail_offset = 0;                     // shared_tail->bytes from here
  std::string etag;        // strong validator: a quoted hash of the whole body and its size
  std::uint64_t hash = 0;  // the hash in etag

  // What follows `bytes`: empty unless shared_tail is set.
  [[nodiscard]] std::string_view tail() const;
  // Bytes of the whole body.
  [[nodiscard]] std::size_t size() const { return bytes.size() + tail().size(); }
  // The whole body as one string (a copy; for tests and logs).
  [[nodiscard]] std::string text() const;
  // The whole body as a gzip member, compressed on the first call; empty when
  // the body is under gzip_min_bytes or zlib failed (send it as it is then).
  [[nodiscard]] const std::string& gzip_bytes() const;
  // Memory this object holds of its own (its head and gzip encoding, not the
  // shared tail), for the catalog's budget.
  [[nodiscard]] std::size_t held_bytes() const;

 private:
  mutable std::string gzip_bytes_;
  mutable bool gzip_made_ = false;
};

// The ETag of the gzip encoding of a body whose ETag is `etag`: "-gz" before
// the closing quote (a different representation needs a different strong
// validator). Known without compressing, so a 304 never compresses.
[[nodiscard]] std::string gzip_etag(std::string_view etag);

// Wraps finished bytes, computing their ETag. Cheap enough for any thread.
[[nodiscard]] std::shared_ptr<const cached_body> make_cached_body(std::string bytes);

// A body made of `head` followed by `artifacts`' bytes from `tail_offset` on
// (see cached_body). Its ETag comes from `head` and artifacts' hash, without
// reading the shared part again.
[[nodiscard]] std::shared_ptr<const cached_body> make_status_body(
    std::string head, std::shared_ptr<const cached_body> artifacts, std::size_t tail_offset);

// A job's two bodies, the status one sharing the artifacts one's checkpoints.
struct cached_job {
  std::shared_ptr<const cached_body> artifacts;
  std::shared_ptr<const cached_body> status;
};

// Both bodies of a job, as publish() builds them and as a reload from the
// store rebuilds them: the same checkpoints and status give the same bytes
// and ETags.
[[nodiscard]] cached_job make_cached_job(std::string_view job_uuid,
                                         std::vector<store::checkpoint> checkpoints,
                                         const job_status& status);

// `head` followed by `tail` as one gzip member (RFC 1952), compressed at
// zlib's fastest level, or empty if zlib fails.
[[nodiscard]] std::string gzip(std::string_view head, std::string_view tail = {});

class catalog {
 public:
  // What the catalog has of one known job. The bodies are null while evicted
  // (see the budget); the ETags and sizes are always there.
  struct job_entry {
    std::shared_ptr<const cached_body> artifacts;
    std::shared_ptr<const cached_body> status;
    std::string artifacts_etag;
    std::size_t artifacts_size = 0;
    std::string status_etag;
    std::size_t status_size = 0;

   private:
    friend class catalog;
    // Bytes counted for the bodies; 0 when evicted.
    std::size_t held_ = 0;
    // Its place in lru_, while it holds bodies (in_lru_).
    std::list<const std::string*>::iterator lru_;
    bool in_lru_ = false;
  };

  // `budget_bytes`: most bytes of bodies kept (see held_bytes()); the least
  // recently used jobs lose theirs first. 0 keeps every body. Default: 0.
  explicit catalog(std::size_t budget_bytes = 0) : budget_(budget_bytes) {}

  // Changes the budget, evicting at once what no longer fits.
  void set_budget(std::size_t budget_bytes);
  [[nodiscard]] std::size_t budget() const { return budget_; }

  // Sets the job's bodies; the job becomes known and the most recently used.
  // Returns true when the job was not known before (the job list changed).
  bool put(const std::string& job_uuid, std::shared_ptr<const cached_body> artifacts,
           std::shared_ptr<const cached_body> status);
  // Gives a known job bodies rebuilt from the store (after an eviction); it
  // becomes the most recently used. Returns true when their ETags differ
  // from the ones kept (the job changed since it was published). Does nothing
  // and returns false when the job is unknown.
  bool restore(std::string_view job_uuid, cached_job bodies);
  // Forgets the job. Returns false when it was not known.
  bool erase(std::string_view job_uuid);
  // A request used the job: it becomes the most recently used, and a gzip
  // encoding made since its bodies were counted is counted now. Nothing when
  // the job is unknown or its bodies are evicted.
  void touch(std::string_view job_uuid);

  // The job, or nullptr when it is unknown.
  [[nodiscard]] const job_entry* find(std::string_view job_uuid) const;
  // The job's bodies, or nullptr when the job is unknown or they are evicted.
  [[nodiscard]] std::shared_ptr<const cached_body> artifacts(std::string_view job_uuid) const;
  [[nodiscard]] std::shared_ptr<const cached_body> status(std::string_view job_uuid) const;
  // The ListPostTrainingJobsResponse body for every known job. Never null.
  // Built on the first call after a change, so publishing many new jobs in a
  // row (as at startup) costs one list, not one per job.
  [[nodiscard]] std::shared_ptr<const cached_body> jobs() const;
  [[nodiscard]] std::size_t size() const { return jobs_by_uuid_.size(); }
  // Bytes held by the bodies kept (heads and gzip encodings, each shared
  // tail once). The job list is not counted.
  [[nodiscard]] std::size_t held_bytes() const { return held_; }

  // Grows by one on every put or erase.
  [[nodiscard]] std::uint64_t generation() const { return generation_; }

 private:
  using map = std::map<std::string, job_entry, std::less<>>;
  void hold(map::iterator it, cached_job bodies);
  void evict(job_entry& e);
  void make_most_recent(map::iterator it);
  void enforce_budget();

  map jobs_by_uuid_;
  // Jobs holding bodies, most recently used first; the keys of jobs_by_uuid_.
  std::list<const std::string*> lru_;
  std::size_t budget_ = 0;
  std::size_t held_ = 0;
  mutable std::shared_ptr<const cached_body> jobs_;  // nullptr: stale
  std::uint64_t generation_ = 0;
};

}  // namespace ckptd::api
