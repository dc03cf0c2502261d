#pragma once
// Cheap completeness checks of weight files and helpers for reading small JSON
// files through a candidate_view. Every check reads a bounded number of bytes
// (a header, a tail) and never the whole weight file.
//
// The checks return a "problem": an empty string when the file looks complete,
// otherwise one line saying what is wrong, for the log.

#include "layout.hpp"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/storage_ptr.hpp>
#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckptd::watcher {

// The safetensors format's own limit on its JSON header (the reference
// implementation refuses larger ones); a bigger length field means garbage.
inline constexpr std::uint64_t max_safetensors_header_bytes = 100'000'000;
// A ZIP end-of-central-directory record is 22 bytes plus a comment of at most
// 65535 bytes, so it always lies within this many bytes of the end.
inline constexpr std::uint64_t zip_tail_bytes = 22 + 65535;
// Sharded-weight indexes list one entry per tensor: a few MB for the largest
// models.
inline constexpr std::uint64_t max_index_bytes = 64ull << 20;
// More distinct shards than this in one index is not a real checkpoint.
inline constexpr std::size_t max_index_shards = 100'000;

// The entry of `c.files()` at `rel`, or nullptr. Binary search: files() is
// sorted by rel.
const file_info* find_file(const candidate_view& c, std::string_view rel);

// safetensors: an 8-byte little-endian header length N, N bytes of JSON, then
// the tensor data. Complete iff the size is 8 + N + the largest data_offsets
// end. `f` must be a regular file of `c`.
std::string safetensors_problem(const candidate_view& c, const file_info& f);

// torch.save files (.pt, .pth, .bin, .ckpt) are ZIP archives whose end record
// is written last: complete iff the end record sits exactly at the end of the
// file and agrees with the central directory before it (or with a ZIP64
// locator). Reads only the last zip_tail_bytes.
std::string zip_problem(const candidate_view& c, const file_info& f);

// A sharded-weights index (model.safetensors.index.json,
// pytorch_model.bin.index.json): parses, and every shard its weight_map names
// exists next to it and passes its own check.
std::string index_problem(const candidate_view& c, const file_info& index);

// Dispatches on the file name: *.safetensors, *.index.json, or a torch.save
// suffix (.pt .pth .bin .ckpt). Other files have nothing to check: "".
std::string weight_file_problem(const candidate_view& c, const file_info& f);

// Checks a set of weight files as a whole: every index passes (which covers
// its shards), every file not covered by an index passes its own check, and a
// shard named "*-0000k-of-0000n.*" without an index is reported (the index is
// written after the shards). Empty `weights`: "no weight files".
std::string weight_set_problem(const candidate_view& c,
                               const std::vector<const file_info*>& weights);

// Reads a whole small file of `c`, refusing more than `max_bytes`. nullopt
// with `problem` set when it is missing, unreadable or too large.
std::optional<std::string> read_small_file(const candidate_view& c, const file_info& f,
                                           std::uint64_t max_bytes, std::string& problem);

// Memory for the values of one parsed JSON document, so that parsing does not
// call malloc for every key, string, array and object: a buffer inside the
// arena (which callers keep on their stack), then the heap for larger
// documents, all released at once when the arena goes. Thread-compatible:
// one arena per parse, never shared. Every value parsed into storage() must
// be gone before the arena is: declare the arena before the value, in the
// frame that uses the value.
class json_arena {
 public:
  json_arena() noexcept : resource_(buffer_.data(), buffer_.size()) {}
  json_arena(const json_arena&) = delete;
  json_arena& operator=(const json_arena&) = delete;
  [[nodiscard]] boost::json::storage_ptr storage() noexcept { return &resource_; }

 private:
  // A manifest, Orbax's metadata, the index of a small model: all fit.
  static constexpr std::size_t buffer_bytes = 16 * 1024;
  alignas(std::max_align_t) std::array<unsigned char, buffer_bytes> buffer_;
  boost::json::monotonic_resource resource_;
};

// Parses JSON as Python's json module writes it: the non-standard literals
// NaN, Infinity and -Infinity (json.dump's default allow_nan=True) are read
// as null, so a diverged loss does not make the whole file unreadable.
// The value's memory comes from `sp` (a json_arena's storage(), or {} for
// the heap when the value must outlive the caller's frame). Never throws on
// bad input: `ec` is set instead.
boost::json::value parse_python_json(std::string_view text, boost::system::error_code& ec,
                                     boost::json::storage_ptr sp);
// `text` with Python's NaN, Infinity and -Infinity (outside strings) turned
// into null: `text` itself when it has none, else a copy kept in `rewritten`.
std::string_view standard_json(std::string_view text, std::string& rewritten);

// A JSON number as a double (integers included); nullopt for anything else.
std::optional<double> json_number(const boost::json::value& v);
// A JSON integer that fits int64 (no fractional part, no exponent form);
// nullopt for anything else.
std::optional<std::int64_t> json_integer(const boost::json::value& v);

// ---------------------------------------------------------------------------
// Names and numbers

// More decimal digits than this never name a real step or epoch, and 18
// always fit int64.
inline constexpr std::size_t max_decimal_digits = 18;

// A step or epoch written in decimal: digits only (no sign, no spaces), at
// most max_decimal_digits. Leading zeros only when `allow_padding` ("0" alone
// is always fine), so that each number has one canonical folder name where the
// trainer formats it without padding. nullopt for anything else.
std::optional<std::int64_t> parse_decimal(std::string_view digits, bool allow_padding);

// A number as Python's str()/format() writes a float or an int ("0.41",
// "1e-05", "-2", "nan", "inf"); the whole text must be the number. nullopt
// for anything else.
std::optional<double> parse_float(std::string_view text);

// `s` without leading and trailing ASCII whitespace.
std::string_view trim_ascii(std::string_view s);

// The "key=value" fields of a checkpoint name as Lightning's ModelCheckpoint
// (and NeMo, which builds on it) formats them: "epoch=4-step=1250",
// "megatron_gpt--val_loss=2.1034-epoch=0". A key runs back from its '=' to
// the previous '-' (or the start); a value runs to the '-' before the next
// key, so negative numbers and exponents ("1e-05") stay whole. Text before
// the first key ("megatron_gpt-") is not a field. Callers strip suffixes
// such as "-v1" and "-last" first.
struct name_field {
  std::string_view key;
  std::string_view value;
};
std::vector<name_field> name_fields(std::string_view stem);

// Which loss a metric name stands for, across trainers: "loss",
// "train_loss", "training_loss", "reduced_train_loss" are training losses;
// "val_loss", "val/loss", "validation_loss", "eval_loss" validation losses;
// "perplexity", "val_perplexity" perplexities. Anything else: none.
enum class metric_role { none, train_loss, validation_loss, perplexity };
metric_role role_of_metric(std::string_view name);

// The general metrics rule of every layout: perplexity is exp(validation
// loss) unless the trainer gave one; training_metrics exist only when the
// training and validation losses are both known and every value is finite.
// Otherwise nullopt, with `note` saying what was missing (for the log).
std::optional<store::training_metrics> metrics_if_known(std::int64_t epoch,
                                                        std::optional<double> train_loss,
                                                        std::optional<double> validation_loss,
                                                        std::optional<double> perplexity,
                                                        std::string& note);

// ---------------------------------------------------------------------------
// Archives

// An uncompressed tar archive (NeMo's .nemo) is complete iff walking its
// member headers from the start (each a 512-byte block whose checksum holds,
// followed by its data rounded up to 512 bytes) reaches two zero blocks that
// lie inside the file. A half-written archive either ends inside a member or
// lacks the end blocks. Reads one block per member, at most max_tar_members.
inline constexpr std::size_t max_tar_members = 100'000;
std::string tar_problem(const candidate_view& c, const file_info& f);
// Whether the file starts with the gzip magic bytes (a compressed archive,
// which cannot be checked without decompressing it).
bool is_gzip(const candidate_view& c, const file_info& f);

// A 64-bit FNV-1a hash as 16 hex digits: short, stable fingerprints of long
// file lists. Not cryptographic; only a change detector.
class fingerprint_hash {
 public:
  void add(std::string_view bytes);
  void add(std::uint64_t number);
  // A file's rel, size and mtime: changes when it is rewritten.
  void add(const file_info& f);
  std::string hex() const;
  std::uint64_t value() const { return state_; }

 private:
  std::uint64_t state_ = 0xcbf29ce484222325ull;
};

// Judges a checkpoint made of torch.save archives (DeepSpeed's model states,
// Megatron's legacy mp_rank_* files): complete when every one of `archives`
// is a whole ZIP. Then sets the verdict, completed_at_ns (the newest mtime)
// and a fingerprint "<tag>:<count>:<hash of names, sizes, mtimes>" in `r` and
// returns true; otherwise sets r.problem and returns false.
bool complete_when_whole_zips(const candidate_view& c,
                              const std::vector<const file_info*>& archives, std::string_view tag,
                              recognition& r);

}  // namespace ckptd::watcher
