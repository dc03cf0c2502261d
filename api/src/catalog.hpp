#pragma once
// The bodies the server answers with, ready to send.
//
// A catalog maps each known job to its finished artifacts body and keeps the
// job list body beside it, so a request is a map lookup and a write: it never
// reads the store and never serializes. Entries are immutable and shared, so a
// response being written keeps its body alive while a newer one replaces it.
//
// Thread-safety: none; the server keeps its catalog on the io_context's thread
// and hands it bodies built elsewhere.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace ckptd::api {

struct cached_body {
  std::string bytes;
  std::string etag;  // strong validator: a quoted hash of `bytes`
};

// Wraps finished bytes, computing their ETag. Cheap enough for any thread.
[[nodiscard]] std::shared_ptr<const cached_body> make_cached_body(std::string bytes);

class catalog {
 public:
  // Sets the job's artifacts body; the job becomes known.
  void put(const std::string& job_uuid, std::shared_ptr<const cached_body> artifacts);
  // Forgets the job. Returns false when it was not known.
  bool erase(std::string_view job_uuid);

  // The job's artifacts body, or nullptr when the job is unknown.
  [[nodiscard]] std::shared_ptr<const cached_body> artifacts(std::string_view job_uuid) const;
  // The ListPostTrainingJobsResponse body for every known job. Never null.
  // Built on the first call after a change, so publishing many new jobs in a
  // row (as at startup) costs one list, not one per job.
  [[nodiscard]] std::shared_ptr<const cached_body> jobs() const;
  [[nodiscard]] std::size_t size() const { return artifacts_.size(); }

  // Grows by one on every put or erase. A waiter that remembers it can tell
  // whether anything changed while it slept (long-poll and SSE will).
  [[nodiscard]] std::uint64_t generation() const { return generation_; }

 private:
  std::map<std::string, std::shared_ptr<const cached_body>, std::less<>> artifacts_;
  mutable std::shared_ptr<const cached_body> jobs_;  // nullptr: stale
  std::uint64_t generation_ = 0;
};

}  // namespace ckptd::api
