#include "codec.hpp"

#include <bit>
#include <cstddef>
#include <limits>
#include <utility>

namespace ckptd::store::codec {
namespace {

using boost::system::result;

[[nodiscard]] boost::system::error_code corrupt() noexcept {
  return make_error_code(errc::corrupt);
}

// Bytes are assembled by shifts, not memcpy, so the format is little-endian
// whatever the host is.
class writer {
 public:
  writer() = default;
  // Room for a record of about `expected_bytes`: one allocation for it, not
  // one per doubling (every checkpoint and event is encoded once).
  explicit writer(std::size_t expected_bytes) { out_.reserve(expected_bytes); }

  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(std::uint32_t v) { little_endian(v); }
  void u64(std::uint64_t v) { little_endian(v); }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void f64(double v) { u64(std::bit_cast<std::uint64_t>(v)); }
  void str(std::string_view s) {
    // Callers hold strings far below 4 GiB; a longer one would not fit a
    // RocksDB value in practice anyway.
    u32(static_cast<std::uint32_t>(s.size()));
    out_.append(s);
  }
  [[nodiscard]] std::string take() && { return std::move(out_); }

 private:
  template <typename Unsigned>
  void little_endian(Unsigned v) {
    char bytes[sizeof v];
    for (std::size_t i = 0; i < sizeof v; ++i) bytes[i] = static_cast<char>(v >> (8 * i));
    out_.append(bytes, sizeof v);
  }

  std::string out_;
};

// Every read checks what is left first; after the first failure all further
// reads fail too, so a decoder can read a whole record and check once.
class reader {
 public:
  explicit reader(std::string_view in) noexcept : in_(in) {}

  [[nodiscard]] bool u8(std::uint8_t& v) noexcept {
    if (!take(1)) return false;
    v = static_cast<std::uint8_t>(last_[0]);
    return true;
  }
  [[nodiscard]] bool u32(std::uint32_t& v) noexcept {
    if (!take(4)) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t{byte(i)} << (8 * i);
    return true;
  }
  [[nodiscard]] bool u64(std::uint64_t& v) noexcept {
    if (!take(8)) return false;
    v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t{byte(i)} << (8 * i);
    return true;
  }
  [[nodiscard]] bool i64(std::int64_t& v) noexcept {
    std::uint64_t u = 0;
    if (!u64(u)) return false;
    v = static_cast<std::int64_t>(u);  // two's complement, defined since C++20
    return true;
  }
  [[nodiscard]] bool f64(double& v) noexcept {
    std::uint64_t u = 0;
    if (!u64(u)) return false;
    v = std::bit_cast<double>(u);
    return true;
  }
  [[nodiscard]] bool str(std::string& v) {
    std::uint32_t n = 0;
    if (!u32(n) || !take(n)) return false;
    v.assign(last_);
    return true;
  }
  [[nodiscard]] bool at_end() const noexcept { return ok_ && in_.empty(); }

 private:
  [[nodiscard]] bool take(std::size_t n) noexcept {
    if (!ok_ || in_.size() < n) {
      ok_ = false;
      return false;
    }
    last_ = in_.substr(0, n);
    in_.remove_prefix(n);
    return true;
  }
  [[nodiscard]] std::uint8_t byte(int i) const noexcept {
    return static_cast<std::uint8_t>(last_[static_cast<std::size_t>(i)]);
  }

  std::string_view in_;
  std::string_view last_;
  bool ok_ = true;
};

std::string with_kind(key_kind kind, std::size_t reserve) {
  std::string key;
  key.reserve(reserve + 1);
  key.push_back(static_cast<char>(kind));
  return key;
}

// A job's checkpoint prefix, with room for `more` bytes after it (the path of
// a key) so that completing it allocates nothing more.
std::string checkpoint_prefix_with_room(std::string_view job_uuid, std::size_t more) {
  std::string key = with_kind(key_kind::checkpoint, job_uuid.size() + 1 + more);
  key.append(job_uuid);
  key.push_back('\0');
  return key;
}

}  // namespace

bool is_storable(std::string_view part) noexcept {
  return !part.empty() && part.find('\0') == std::string_view::npos;
}

std::string job_key(std::string_view job_uuid) {
  std::string key = with_kind(key_kind::job, job_uuid.size());
  key.append(job_uuid);
  return key;
}

std::string checkpoint_prefix(std::string_view job_uuid) {
  return checkpoint_prefix_with_room(job_uuid, 0);
}

std::string checkpoint_prefix_end(std::string_view job_uuid) {
  // The prefix ends in '\0'; the same bytes ending in '\1' sort after every
  // key that has the prefix and before any other job's keys.
  std::string key = checkpoint_prefix(job_uuid);
  key.back() = '\1';
  return key;
}

std::string checkpoint_key(std::string_view job_uuid, std::string_view path) {
  std::string key = checkpoint_prefix_with_room(job_uuid, path.size());
  key.append(path);
  return key;
}

std::string jobs_begin() { return with_kind(key_kind::job, 0); }

std::string jobs_end() {
  std::string key = jobs_begin();
  key.back() = static_cast<char>(static_cast<char>(key_kind::job) + 1);
  return key;
}

std::string schema_key() {
  std::string key = with_kind(key_kind::meta, 6);
  key.append("schema");
  return key;
}

std::string event_seq_key() {
  std::string key = with_kind(key_kind::meta, 9);
  key.append("event_seq");
  return key;
}

std::string event_key(std::uint64_t seq) {
  // Big-endian, unlike values: bytewise key order must be numeric order.
  std::string key = with_kind(key_kind::event, 8);
  for (int i = 7; i >= 0; --i) key.push_back(static_cast<char>(seq >> (8 * i)));
  return key;
}

std::string events_begin() { return with_kind(key_kind::event, 0); }

std::string events_end() {
  std::string key = events_begin();
  key.back() = static_cast<char>(static_cast<char>(key_kind::event) + 1);
  return key;
}

result<std::uint64_t> seq_from_event_key(std::string_view key) {
  if (key.size() != 9 || key.front() != static_cast<char>(key_kind::event)) return corrupt();
  std::uint64_t seq = 0;
  for (std::size_t i = 1; i < 9; ++i) seq = (seq << 8) | static_cast<std::uint8_t>(key[i]);
  return seq;
}

result<std::string> job_uuid_from_key(std::string_view key) {
  if (key.empty() || key.front() != static_cast<char>(key_kind::job)) return corrupt();
  key.remove_prefix(1);
  if (!is_storable(key)) return corrupt();
  return std::string(key);
}

result<std::string> path_from_key(std::string_view key, std::string_view prefix) {
  if (!key.starts_with(prefix)) return corrupt();
  key.remove_prefix(prefix.size());
  if (!is_storable(key)) return corrupt();
  return std::string(key);
}

std::string encode_checkpoint(const checkpoint& c) {
  writer w(1 + 4 + c.identifier.size() + 3 * 8 + 1 + 4 * 8 + 4 + c.fingerprint.size() + 8);
  w.u8(value_format);
  w.str(c.identifier);
  w.i64(c.epoch);
  w.i64(c.step);
  w.i64(c.created_at_ns);
  w.u8(c.metrics ? 1 : 0);
  if (c.metrics) {
    w.i64(c.metrics->epoch);
    w.f64(c.metrics->train_loss);
    w.f64(c.metrics->validation_loss);
    w.f64(c.metrics->perplexity);
  }
  w.str(c.fingerprint);
  // Written only when known, so records without it keep their old bytes.
  if (c.listing_hash != 0) w.u64(c.listing_hash);
  return std::move(w).take();
}

result<checkpoint> decode_checkpoint(std::string_view value, std::string path) {
  reader r(value);
  checkpoint c;
  c.path = std::move(path);
  std::uint8_t format = 0;
  std::uint8_t has_metrics = 0;
  if (!r.u8(format) || format != value_format) return corrupt();
  if (!r.str(c.identifier) || !r.i64(c.epoch) || !r.i64(c.step) || !r.i64(c.created_at_ns) ||
      !r.u8(has_metrics)) {
    return corrupt();
  }
  // Only 0 and 1 are written; anything else is damage, and accepting it would
  // make two encodings of one record.
  if (has_metrics > 1) return corrupt();
  if (has_metrics == 1) {
    training_metrics m;
    if (!r.i64(m.epoch) || !r.f64(m.train_loss) || !r.f64(m.validation_loss) ||
        !r.f64(m.perplexity)) {
      return corrupt();
    }
    c.metrics = m;
  }
  if (!r.str(c.fingerprint)) return corrupt();
  if (r.at_end()) return c;  // written without a listing hash
  // A stored 0 would be a second encoding of "unknown": damage.
  if (!r.u64(c.listing_hash) || c.listing_hash == 0 || !r.at_end()) return corrupt();
  return c;
}

std::string encode_job(const job& j) {
  writer w;
  w.u8(value_format);
  w.str(j.dir);
  w.i64(j.first_seen_ns);
  w.str(j.status);
  w.i64(j.started_at_ns);
  w.i64(j.completed_at_ns);
  return std::move(w).take();
}

result<job> decode_job(std::string_view value, std::string uuid) {
  reader r(value);
  job j;
  j.uuid = std::move(uuid);
  std::uint8_t format = 0;
  if (!r.u8(format) || format != value_format) return corrupt();
  if (!r.str(j.dir) || !r.i64(j.first_seen_ns) || !r.str(j.status) || !r.i64(j.started_at_ns) ||
      !r.i64(j.completed_at_ns) || !r.at_end())
    return corrupt();
  return j;
}

std::string encode_schema(std::uint32_t version) {
  writer w;
  w.u32(version);
  return std::move(w).take();
}

result<std::uint32_t> decode_schema(std::string_view value) {
  reader r(value);
  std::uint32_t version = 0;
  if (!r.u32(version) || !r.at_end()) return corrupt();
  return version;
}

std::string encode_event(const event& e) { return encode_event(e, e.job_uuid, e.at_ns); }

std::string encode_event(const event& e, std::string_view job_uuid, std::int64_t at_ns) {
  writer w(1 + 3 * 4 + job_uuid.size() + e.type.size() + e.data.size() + 8);
  w.u8(value_format);
  w.str(job_uuid);
  w.str(e.type);
  w.str(e.data);
  w.i64(at_ns);
  return std::move(w).take();
}

result<event> decode_event(std::string_view value, std::uint64_t seq) {
  reader r(value);
  event e;
  e.seq = seq;
  std::uint8_t format = 0;
  if (!r.u8(format) || format != value_format) return corrupt();
  if (!r.str(e.job_uuid) || !r.str(e.type) || !r.str(e.data) || !r.i64(e.at_ns) || !r.at_end()) {
    return corrupt();
  }
  return e;
}

std::string encode_event_seq(std::uint64_t seq) {
  writer w;
  w.u64(seq);
  return std::move(w).take();
}

result<std::uint64_t> decode_event_seq(std::string_view value) {
  reader r(value);
  std::uint64_t seq = 0;
  if (!r.u64(seq) || !r.at_end()) return corrupt();
  return seq;
}

std::string printable(std::string_view bytes) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size());
  for (const char ch : bytes) {
    const auto b = static_cast<unsigned char>(ch);
    if (b >= 0x20 && b < 0x7f && b != '\\') {
      out.push_back(ch);
    } else {
      out += "\\x";
      out.push_back(hex[b >> 4]);
      out.push_back(hex[b & 0xf]);
    }
  }
  return out;
}

}  // namespace ckptd::store::codec
