#pragma once
// The index's on-disk layout: key construction and value encoding. Pure
// functions, no RocksDB, so that every byte of the format is unit-tested.
//
// Keys start with one kind byte, so each kind is one contiguous key range:
//   'c' job_uuid '\0' path   a checkpoint; one job's checkpoints are one prefix
//   'e' u64 big-endian       an event, by seq; big-endian so key order is seq order
//   'j' job_uuid             a job record
//   'm' name                 metadata; 'm' "schema" holds the schema version,
//                            'm' "event_seq" the last event seq assigned
// Event keys live in the "events" column family since schema version 2, the
// rest in the default one (see index.cpp).
// Job uuids and paths never contain NUL, so '\0' ends the uuid unambiguously:
// job "a" has prefix "ca\0" and job "ab" has "cab\0", and neither scan can
// reach into the other.
//
// Values start with a format byte (value_format), then fixed-width
// little-endian integers, doubles as their IEEE-754 bits, and strings as a u32
// little-endian length followed by the bytes. The key's parts (uuid, path) are
// not repeated in the value. Decoding checks every length against what is left
// and rejects trailing bytes, so a damaged value is errc::corrupt, never UB.

#include <ckptd/store.hpp>

#include <boost/system/result.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace ckptd::store::codec {

enum class key_kind : char {
  checkpoint = 'c',
  event = 'e',  // 'e' + big-endian u64 seq
  job = 'j',
  meta = 'm',
};

// The first byte of every value; bump it (and index::schema_version) when a
// value's layout changes.
inline constexpr std::uint8_t value_format = 1;

// A job uuid or checkpoint path the key layout can hold: not empty, no NUL.
[[nodiscard]] bool is_storable(std::string_view part) noexcept;

// Key builders. Preconditions: every part is_storable().
[[nodiscard]] std::string job_key(std::string_view job_uuid);
[[nodiscard]] std::string checkpoint_key(std::string_view job_uuid, std::string_view path);
// The half-open range [checkpoint_prefix, checkpoint_prefix_end) holds exactly
// one job's checkpoints.
[[nodiscard]] std::string checkpoint_prefix(std::string_view job_uuid);
[[nodiscard]] std::string checkpoint_prefix_end(std::string_view job_uuid);
// [jobs_begin, jobs_end) holds every job record.
[[nodiscard]] std::string jobs_begin();
[[nodiscard]] std::string jobs_end();
[[nodiscard]] std::string schema_key();
[[nodiscard]] std::string event_seq_key();
[[nodiscard]] std::string event_key(std::uint64_t seq);
// [events_begin, events_end) holds every event, in seq order.
[[nodiscard]] std::string events_begin();
[[nodiscard]] std::string events_end();

// The uuid from a job key; errc::corrupt when `key` is not a valid job key.
[[nodiscard]] boost::system::result<std::string> job_uuid_from_key(std::string_view key);
// The path from a checkpoint key known to start with `prefix`; errc::corrupt
// when the rest is not a valid path.
[[nodiscard]] boost::system::result<std::string> path_from_key(std::string_view key,
                                                               std::string_view prefix);
// The seq from an event key; errc::corrupt when `key` is not a valid event key.
[[nodiscard]] boost::system::result<std::uint64_t> seq_from_event_key(std::string_view key);

// Values. encode_* never fail; decode_* return errc::corrupt on any malformed
// input, and a successful decode re-encodes to exactly the same bytes.
[[nodiscard]] std::string encode_checkpoint(const checkpoint& c);  // c.path goes in the key
[[nodiscard]] boost::system::result<checkpoint> decode_checkpoint(std::string_view value,
                                                                  std::string path);
[[nodiscard]] std::string encode_job(const job& j);  // j.uuid goes in the key
[[nodiscard]] boost::system::result<job> decode_job(std::string_view value, std::string uuid);
[[nodiscard]] std::string encode_schema(std::uint32_t version);
[[nodiscard]] boost::system::result<std::uint32_t> decode_schema(std::string_view value);
[[nodiscard]] std::string encode_event(const event& e);  // e.seq goes in the key
// As encode_event, with the job and time given apart: what apply() stores for
// an event that leaves them to the change, without copying the event.
[[nodiscard]] std::string encode_event(const event& e, std::string_view job_uuid,
                                       std::int64_t at_ns);
[[nodiscard]] boost::system::result<event> decode_event(std::string_view value, std::uint64_t seq);
[[nodiscard]] std::string encode_event_seq(std::uint64_t seq);
[[nodiscard]] boost::system::result<std::uint64_t> decode_event_seq(std::string_view value);

// `bytes` with everything outside printable ASCII as \xNN: keys hold NULs and
// log lines must not.
[[nodiscard]] std::string printable(std::string_view bytes);

}  // namespace ckptd::store::codec
