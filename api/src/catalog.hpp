#pragma once
// The bodies the server answers with, ready to send.
//
// A catalog maps each known job to its finished artifacts and status bodies
// and keeps the job list body beside them, so a request is a map lookup and a
// write: it never reads the store and never serializes. Entries are immutable
// and shared, so a response being written keeps its body alive while a newer
// one replaces it.
//
// Thread-safety: none; the server keeps its catalog on the io_context's thread
// and hands it bodies built elsewhere.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

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

// `head` followed by `tail` as one gzip member (RFC 1952), compressed at
// zlib's fastest level, or empty if zlib fails.
[[nodiscard]] std::string gzip(std::string_view head, std::string_view tail = {});

class catalog {
 public:
  // Sets the job's bodies; the job becomes known. Returns true when the job
  // was not known before (the job list changed).
  bool put(const std::string& job_uuid, std::shared_ptr<const cached_body> artifacts,
           std::shared_ptr<const cached_body> status);
  // Forgets the job. Returns false when it was not known.
  bool erase(std::string_view job_uuid);

  // The job's bodies, or nullptr when the job is unknown.
  [[nodiscard]] std::shared_ptr<const cached_body> artifacts(std::string_view job_uuid) const;
  [[nodiscard]] std::shared_ptr<const cached_body> status(std::string_view job_uuid) const;
  // The ListPostTrainingJobsResponse body for every known job. Never null.
  // Built on the first call after a change, so publishing many new jobs in a
  // row (as at startup) costs one list, not one per job.
  [[nodiscard]] std::shared_ptr<const cached_body> jobs() const;
  [[nodiscard]] std::size_t size() const { return jobs_by_uuid_.size(); }

  // Grows by one on every put or erase.
  [[nodiscard]] std::uint64_t generation() const { return generation_; }

 private:
  struct entry {
    std::shared_ptr<const cached_body> artifacts;
    std::shared_ptr<const cached_body> status;
  };
  std::map<std::string, entry, std::less<>> jobs_by_uuid_;
  mutable std::shared_ptr<const cached_body> jobs_;  // nullptr: stale
  std::uint64_t generation_ = 0;
};

}  // namespace ckptd::api
