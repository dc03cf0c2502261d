#include "catalog.hpp"

#include "artifacts_json.hpp"

#include <cstdio>
#include <utility>
#include <vector>

namespace ckptd::api {
namespace {

// FNV-1a, 64 bits: stable across runs and builds, so a client's ETag stays
// valid over a daemon restart when the body has not changed.
std::uint64_t fnv1a(std::string_view bytes) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

}  // namespace

std::shared_ptr<const cached_body> make_cached_body(std::string bytes) {
  // The length goes in too: it costs nothing and separates bodies whose
  // hashes collide but whose sizes differ.
  char etag[48];
  const int n = std::snprintf(etag, sizeof etag, "\"%016llx-%zx\"",
                              static_cast<unsigned long long>(fnv1a(bytes)), bytes.size());
  auto body = std::make_shared<cached_body>();
  body->etag.assign(etag, static_cast<std::size_t>(n));
  body->bytes = std::move(bytes);
  return body;
}

void catalog::put(const std::string& job_uuid, std::shared_ptr<const cached_body> artifacts) {
  auto [it, inserted] = artifacts_.try_emplace(job_uuid, artifacts);
  if (!inserted) it->second = std::move(artifacts);
  ++generation_;
  if (inserted) jobs_.reset();
}

bool catalog::erase(std::string_view job_uuid) {
  const auto it = artifacts_.find(job_uuid);
  if (it == artifacts_.end()) return false;
  artifacts_.erase(it);
  ++generation_;
  jobs_.reset();
  return true;
}

std::shared_ptr<const cached_body> catalog::artifacts(std::string_view job_uuid) const {
  const auto it = artifacts_.find(job_uuid);
  return it == artifacts_.end() ? nullptr : it->second;
}

std::shared_ptr<const cached_body> catalog::jobs() const {
  if (jobs_) return jobs_;
  std::vector<std::string_view> uuids;
  uuids.reserve(artifacts_.size());
  for (const auto& entry : artifacts_) uuids.push_back(entry.first);
  jobs_ = make_cached_body(jobs_json(uuids));
  return jobs_;
}

}  // namespace ckptd::api
