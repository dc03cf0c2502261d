#pragma once
// ckptd::json_text — the one serializer of llama-stack's Checkpoint object,
// shared by the API's bodies and the watcher's push events so both carry
// byte-for-byte the same shape.
//
// A small writer of its own rather than Boost.JSON's serializer: Boost.JSON
// 1.81 prints doubles as "2.59133E0", and a training loss should read
// "2.59133". Numbers are the shortest decimal that reads back as the same
// double; strings are repaired to valid UTF-8 and escaped minimally (", \,
// and control characters), as Boost.JSON does.
//
// Everything here is pure and thread-safe: values in, bytes out.

#include <ckptd/store.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ckptd::json_text {

// `text` with every ill-formed UTF-8 sequence (stray continuation bytes,
// truncated or overlong sequences, surrogates, code points past U+10FFFF)
// replaced by U+FFFD, one replacement per maximal ill-formed subpart as
// Unicode recommends. Well-formed input comes back unchanged. File names on
// Linux are arbitrary bytes; JSON text must be UTF-8.
[[nodiscard]] std::string to_valid_utf8(std::string_view text);

// RFC 3339 UTC with microseconds, e.g. "2026-11-29T10:08:38.123456Z", for
// nanoseconds since the Unix epoch (truncated towards the past).
[[nodiscard]] std::string rfc3339_utc(std::int64_t ns_since_epoch);
// Appends what rfc3339_utc returns, without a string of its own.
void append_rfc3339_utc(std::string& out, std::int64_t ns_since_epoch);

// Appends `text` as a JSON string: quoted, UTF-8 repaired, escaped.
void append_string(std::string& out, std::string_view text);

// Appends the shortest decimal that parses back to exactly `value`, with
// ".0" added to whole numbers so that every reader sees a floating-point
// number ("3.0", "2.59133", "1e-05", "-0.0"). JSON has no NaN or infinity:
// those append "null", so callers leave such values out instead.
void append_number(std::string& out, double value);

void append_integer(std::string& out, std::int64_t value);

// True when every number of `m` can be written as JSON (none is NaN or
// infinite). A Checkpoint carries training_metrics only then: the schema
// wants all four numbers or no metrics object at all.
[[nodiscard]] bool metrics_writable(const store::training_metrics& m);

// Appends the Checkpoint object of `c` (additionalProperties: false in the
// schema, so exactly identifier, created_at, epoch, post_training_job_id,
// path and, when writable, training_metrics, in that order).
// post_training_job_id is `job_uuid`.
void append_checkpoint(std::string& out, const store::checkpoint& c, std::string_view job_uuid);

// The Checkpoint object of `c` alone, as append_checkpoint writes it.
[[nodiscard]] std::string checkpoint(const store::checkpoint& c, std::string_view job_uuid);

// Puts checkpoints in the order the API lists them: by epoch, step,
// created_at, then path.
void order_checkpoints(std::vector<store::checkpoint>& checkpoints);

// Appends a JSON array of the Checkpoint objects of `ordered`, as given.
void append_checkpoints(std::string& out, const std::vector<store::checkpoint>& ordered,
                        std::string_view job_uuid);

}  // namespace ckptd::json_text
