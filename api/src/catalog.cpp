#include "catalog.hpp"

#include "artifacts_json.hpp"

#include <zlib.h>

#include <cstdio>
#include <limits>
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

// zlib's windowBits: 15 for the largest window, +16 for a gzip wrapper.
constexpr int gzip_window_bits = 15 + 16;
constexpr int gzip_memory_level = 8;

}  // namespace

std::string gzip(std::string_view bytes) {
  if (bytes.size() > std::numeric_limits<uInt>::max()) return {};
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, gzip_window_bits, gzip_memory_level,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    return {};
  }
  std::string out(deflateBound(&z, static_cast<uLong>(bytes.size())) + 32, '\0');
  // zlib's API is not const-correct; it only reads next_in.
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return {};
  return out;
}

std::shared_ptr<const cached_body> make_cached_body(std::string bytes) {
  // The length goes in too: it costs nothing and separates bodies whose
  // hashes collide but whose sizes differ.
  char etag[48];
  const int n = std::snprintf(etag, sizeof etag, "\"%016llx-%zx\"",
                              static_cast<unsigned long long>(fnv1a(bytes)), bytes.size());
  auto body = std::make_shared<cached_body>();
  body->etag.assign(etag, static_cast<std::size_t>(n));
  if (bytes.size() >= gzip_min_bytes) {
    body->gzip_bytes = gzip(bytes);
    if (!body->gzip_bytes.empty()) {
      body->gzip_etag = body->etag.substr(0, body->etag.size() - 1) + "-gz\"";
    }
  }
  body->bytes = std::move(bytes);
  return body;
}

bool catalog::put(const std::string& job_uuid, std::shared_ptr<const cached_body> artifacts,
                  std::shared_ptr<const cached_body> status) {
  entry e{std::move(artifacts), std::move(status)};
  auto [it, inserted] = jobs_by_uuid_.try_emplace(job_uuid, e);
  if (!inserted) it->second = std::move(e);
  ++generation_;
  if (inserted) jobs_.reset();
  return inserted;
}

bool catalog::erase(std::string_view job_uuid) {
  const auto it = jobs_by_uuid_.find(job_uuid);
  if (it == jobs_by_uuid_.end()) return false;
  jobs_by_uuid_.erase(it);
  ++generation_;
  jobs_.reset();
  return true;
}

std::shared_ptr<const cached_body> catalog::artifacts(std::string_view job_uuid) const {
  const auto it = jobs_by_uuid_.find(job_uuid);
  return it == jobs_by_uuid_.end() ? nullptr : it->second.artifacts;
}

std::shared_ptr<const cached_body> catalog::status(std::string_view job_uuid) const {
  const auto it = jobs_by_uuid_.find(job_uuid);
  return it == jobs_by_uuid_.end() ? nullptr : it->second.status;
}

std::shared_ptr<const cached_body> catalog::jobs() const {
  if (jobs_) return jobs_;
  std::vector<std::string_view> uuids;
  uuids.reserve(jobs_by_uuid_.size());
  for (const auto& item : jobs_by_uuid_) uuids.push_back(item.first);
  jobs_ = make_cached_body(jobs_json(uuids));
  return jobs_;
}

}  // namespace ckptd::api
