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

// Bodies at least this large also get a gzip encoding. Default: 1 KiB; below
// that the headers outweigh what compression saves.
constexpr std::size_t gzip_min_bytes = 1024;

struct cached_body {
  std::string bytes;
  std::string etag;  // strong validator: a quoted hash of `bytes`
  // The same body gzip-compressed, or empty when not worth it; its ETag is
  // `etag` with "-gz" before the closing quote (a different representation
  // needs a different strong validator).
  std::string gzip_bytes;
  std::string gzip_etag;
};

// Wraps finished bytes, computing their ETag and, when they are at least
// gzip_min_bytes, their gzip encoding. Cheap enough for any thread.
[[nodiscard]] std::shared_ptr<const cached_body> make_cached_body(std::string bytes);

// `bytes` as a gzip member (RFC 1952), or empty if zlib fails.
[[nodiscard]] std::string gzip(std::string_view bytes);

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
