#include "catalog.hpp"

#include "artifacts_json.hpp"

#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace ckptd::api {
namespace {

constexpr std::uint64_t hash_seed = 0xcbf29ce484222325ULL;

// GCC's and Clang's 128-bit integer (one mul instruction on x86-64);
// __extension__ keeps -Wpedantic quiet about it.
__extension__ typedef unsigned __int128 uint128;

// Multiplies out to 128 bits and folds the halves: every input bit reaches
// every output bit.
std::uint64_t fold_multiply(std::uint64_t a, std::uint64_t b) {
  const uint128 product = static_cast<uint128>(a) * b;
  return static_cast<std::uint64_t>(product) ^ static_cast<std::uint64_t>(product >> 64);
}

std::uint64_t little_endian_word(const char* at, std::size_t n) {
  unsigned char bytes[8] = {};
  if (n != 0) std::memcpy(bytes, at, n);  // `at` may be null when n is 0
  std::uint64_t word = 0;
  for (int i = 7; i >= 0; --i) word = word << 8 | bytes[i];  // one load on x86
  return word;
}

// A 64-bit hash of `bytes`, continuing from `hash`, eight bytes per step
// (FNV-1a's byte at a time was a tenth of publishing a job's body): stable
// across runs, builds and byte orders, so a client's ETag stays valid over a
// daemon restart when the body has not changed. Not for adversaries: a
// body's bytes come from the index, and the size goes in the ETag too.
std::uint64_t body_hash(std::string_view bytes, std::uint64_t hash = hash_seed) {
  constexpr std::uint64_t odd_constant = 0x9e3779b97f4a7c15ULL;  // 2^64 / golden ratio
  std::size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    hash = fold_multiply(hash ^ little_endian_word(bytes.data() + i, 8), odd_constant);
  }
  // The tail, padded with zeros; its length is told apart by the total size.
  hash = fold_multiply(hash ^ little_endian_word(bytes.data() + i, bytes.size() - i),
                       odd_constant);
  return fold_multiply(hash ^ bytes.size(), odd_constant ^ hash_seed);
}

// zlib's windowBits: 15 for the largest window, +16 for a gzip wrapper.
constexpr int gzip_window_bits = 15 + 16;
constexpr int gzip_memory_level = 8;
// Z_BEST_SPEED: on a 310 KB artifacts body (1,000 checkpoints) level 1 took
// 1.6 ms and left 17.8 % of the bytes, the default level 6 took 3.5 ms for
// 15.6 %. Bodies are compressed on the HTTP thread, so speed wins.
constexpr int gzip_level = Z_BEST_SPEED;

std::shared_ptr<cached_body> with_etag(std::uint64_t hash, std::size_t size) {
  // The length goes in too: it costs nothing and separates bodies whose
  // hashes collide but whose sizes differ.
  char etag[48];
  const int n = std::snprintf(etag, sizeof etag, "\"%016llx-%zx\"",
                              static_cast<unsigned long long>(hash), size);
  auto body = std::make_shared<cached_body>();
  body->etag.assign(etag, static_cast<std::size_t>(n));
  body->hash = hash;
  return body;
}

}  // namespace

std::string_view cached_body::tail() const {
  if (!shared_tail) return {};
  return std::string_view(shared_tail->bytes).substr(tail_offset);
}

std::string cached_body::text() const {
  std::string out = bytes;
  out += tail();
  return out;
}

const std::string& cached_body::gzip_bytes() const {
  if (!gzip_made_) {
    gzip_made_ = true;
    if (size() >= gzip_min_bytes) gzip_bytes_ = gzip(bytes, tail());
  }
  return gzip_bytes_;
}

std::size_t cached_body::held_bytes() const {
  return sizeof(cached_body) + bytes.capacity() + gzip_bytes_.capacity();
}

std::string gzip_etag(std::string_view etag) {
  std::string out(etag.substr(0, etag.size() - 1));
  out += "-gz\"";
  return out;
}

std::string gzip(std::string_view head, std::string_view tail) {
  if (head.size() + tail.size() > std::numeric_limits<uInt>::max()) return {};
  z_stream z{};
  if (deflateInit2(&z, gzip_level, Z_DEFLATED, gzip_window_bits, gzip_memory_level,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    return {};
  }
  std::string out(deflateBound(&z, static_cast<uLong>(head.size() + tail.size())) + 32, '\0');
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  // zlib's API is not const-correct; it only reads next_in.
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(head.data()));
  z.avail_in = static_cast<uInt>(head.size());
  int rc = head.empty() ? Z_OK : deflate(&z, Z_NO_FLUSH);
  if (rc == Z_OK) {
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(tail.data()));
    z.avail_in = static_cast<uInt>(tail.size());
    rc = deflate(&z, Z_FINISH);
  }
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return {};
  // deflateBound is about the input's size: give the rest back.
  out.shrink_to_fit();
  return out;
}

std::shared_ptr<const cached_body> make_cached_body(std::string bytes) {
  auto body = with_etag(body_hash(bytes), bytes.size());
  body->bytes = std::move(bytes);
  return body;
}

std::shared_ptr<const cached_body> make_status_body(std::string head,
                                                    std::shared_ptr<const cached_body> artifacts,
                                                    std::size_t tail_offset) {
  // The artifacts hash covers the shared part (and the job's uuid before it,
  // which never changes), so folding the head into it gives a hash that
  // changes whenever the whole body does.
  const std::size_t size = head.size() + (artifacts->bytes.size() - tail_offset);
  auto body = with_etag(body_hash(head, artifacts->hash), size);
  body->bytes = std::move(head);
  body->shared_tail = std::move(artifacts);
  body->tail_offset = tail_offset;
  return body;
}

cached_job make_cached_job(std::string_view job_uuid, std::vector<store::checkpoint> checkpoints,
                           const job_status& status) {
  shared_job_bodies bodies = shared_job_json(job_uuid, std::move(checkpoints), status);
  cached_job out;
  out.artifacts = make_cached_body(std::move(bodies.artifacts));
  out.status =
      make_status_body(std::move(bodies.status_head), out.artifacts, bodies.checkpoints_at);
  return out;
}

void catalog::set_budget(std::size_t budget_bytes) {
  budget_ = budget_bytes;
  enforce_budget();
}

bool catalog::put(const std::string& job_uuid, std::shared_ptr<const cached_body> artifacts,
                  std::shared_ptr<const cached_body> status) {
  auto [it, inserted] = jobs_by_uuid_.try_emplace(job_uuid);
  hold(it, {std::move(artifacts), std::move(status)});
  ++generation_;
  if (inserted) jobs_.reset();
  return inserted;
}

bool catalog::restore(std::string_view job_uuid, cached_job bodies) {
  const auto it = jobs_by_uuid_.find(job_uuid);
  if (it == jobs_by_uuid_.end()) return false;
  const bool changed = it->second.artifacts_etag != bodies.artifacts->etag ||
                       it->second.status_etag != bodies.status->etag;
  hold(it, std::move(bodies));
  return changed;
}

bool catalog::erase(std::string_view job_uuid) {
  const auto it = jobs_by_uuid_.find(job_uuid);
  if (it == jobs_by_uuid_.end()) return false;
  evict(it->second);
  jobs_by_uuid_.erase(it);
  ++generation_;
  jobs_.reset();
  return true;
}

void catalog::touch(std::string_view job_uuid) {
  const auto it = jobs_by_uuid_.find(job_uuid);
  if (it == jobs_by_uuid_.end() || !it->second.in_lru_) return;
  job_entry& e = it->second;
  // A gzip encoding may have been made since the bodies were counted.
  const std::size_t now = e.artifacts->held_bytes() + e.status->held_bytes();
  held_ = held_ - e.held_ + now;
  e.held_ = now;
  make_most_recent(it);
  enforce_budget();
}

const catalog::job_entry* catalog::find(std::string_view job_uuid) const {
  const auto it = jobs_by_uuid_.find(job_uuid);
  return it == jobs_by_uuid_.end() ? nullptr : &it->second;
}

std::shared_ptr<const cached_body> catalog::artifacts(std::string_view job_uuid) const {
  const job_entry* e = find(job_uuid);
  return e == nullptr ? nullptr : e->artifacts;
}

std::shared_ptr<const cached_body> catalog::status(std::string_view job_uuid) const {
  const job_entry* e = find(job_uuid);
  return e == nullptr ? nullptr : e->status;
}

void catalog::hold(map::iterator it, cached_job bodies) {
  job_entry& e = it->second;
  evict(e);
  e.artifacts_etag = bodies.artifacts->etag;
  e.artifacts_size = bodies.artifacts->size();
  e.status_etag = bodies.status->etag;
  e.status_size = bodies.status->size();
  e.held_ = bodies.artifacts->held_bytes() + bodies.status->held_bytes();
  e.artifacts = std::move(bodies.artifacts);
  e.status = std::move(bodies.status);
  held_ += e.held_;
  make_most_recent(it);
  enforce_budget();
}

void catalog::evict(job_entry& e) {
  if (!e.in_lru_) return;
  lru_.erase(e.lru_);
  e.in_lru_ = false;
  held_ -= e.held_;
  e.held_ = 0;
  // A response being written keeps its own reference to the body.
  e.artifacts.reset();
  e.status.reset();
}

void catalog::make_most_recent(map::iterator it) {
  job_entry& e = it->second;
  if (e.in_lru_) {
    lru_.splice(lru_.begin(), lru_, e.lru_);
  } else {
    e.lru_ = lru_.insert(lru_.begin(), &it->first);
    e.in_lru_ = true;
  }
}

void catalog::enforce_budget() {
  if (budget_ == 0) return;
  // The job just used may go too: a body larger than the whole budget is not
  // kept at all (the request that needed it holds its own reference).
  while (held_ > budget_ && !lru_.empty()) evict(jobs_by_uuid_.find(*lru_.back())->second);
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
