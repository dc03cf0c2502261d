#include "formats.hpp"

#include "json_sax.hpp"

#include <boost/json/parse.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <set>
#include <tuple>

namespace ckptd::watcher {

namespace {

namespace json = boost::json;
using boost::system::error_code;

constexpr std::string_view zip_end_signature = "PK\x05\x06";
constexpr std::string_view zip64_locator_signature = "PK\x06\x07";
constexpr std::string_view zip64_end_signature = "PK\x06\x06";
constexpr std::size_t zip_end_bytes = 22;
constexpr std::size_t zip64_locator_bytes = 20;
constexpr std::size_t zip64_end_min_bytes = 56;
constexpr std::uint32_t zip_field_in_zip64 = 0xFFFFFFFF;
// The first read of a safetensors file: its 8-byte length and, for the
// headers of all but the largest models, the whole header.
constexpr std::uint64_t safetensors_first_read_bytes = 64 * 1024;

std::uint64_t load_le(std::string_view bytes, std::size_t at, std::size_t width) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < width; ++i) {
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
  }
  return v;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// How a file is named in messages: its rel, or the candidate's name for a
// file candidate. A view, so that the checks build no string unless they
// report a problem (`what + ": ..."` makes the message).
class label {
 public:
  label(const candidate_view& c, const file_info& f) : text_(f.rel.empty() ? c.name() : f.rel) {}
  friend std::string operator+(const label& l, std::string_view rest) {
    std::string out;
    out.reserve(l.text_.size() + rest.size());
    out.append(l.text_).append(rest);
    return out;
  }

 private:
  std::string_view text_;
};

bool is_torch_save_name(std::string_view rel) {
  return ends_with(rel, ".pt") || ends_with(rel, ".pth") || ends_with(rel, ".bin") ||
         ends_with(rel, ".ckpt");
}

bool is_index_name(std::string_view rel) { return ends_with(rel, ".index.json"); }

// "model-00001-of-00004.safetensors": digits, "-of-", digits, then the suffix.
bool is_shard_name(std::string_view rel) {
  const auto slash = rel.rfind('/');
  const std::string_view name = slash == std::string_view::npos ? rel : rel.substr(slash + 1);
  const auto of = name.rfind("-of-");
  if (of == std::string_view::npos || of == 0) return false;
  std::size_t before = of;
  while (before > 0 && name[before - 1] >= '0' && name[before - 1] <= '9') --before;
  if (before == of || before == 0 || name[before - 1] != '-') return false;
  std::size_t after = of + 4;
  const std::size_t digits_start = after;
  while (after < name.size() && name[after] >= '0' && name[after] <= '9') ++after;
  return after > digits_start && after < name.size() && name[after] == '.';
}

// A shard name from an index must stay inside the candidate: relative, no
// empty, "." or ".." components.
bool is_safe_relative(std::string_view rel) {
  if (rel.empty() || rel.front() == '/') return false;
  std::size_t start = 0;
  while (start <= rel.size()) {
    const auto end = std::min(rel.find('/', start), rel.size());
    const auto part = rel.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

// One root entry of a safetensors header other than __metadata__: whether
// its value is an object whose data_offsets is an array of two integers
// 0 <= begin <= end (fitting int64), and that end.
struct header_tensor {
  std::string_view name;
  std::uint64_t end = 0;
  bool valid = false;
  bool superseded = false;  // a later entry of the same name replaces it
};

// Reads a safetensors header as it is parsed (a large model's is 10-100 KB
// of JSON, whose document tree cost far more than the check): it keeps, per
// root entry, only what header_tensor says. Within a tensor's object the last
// of duplicate "data_offsets" counts, as in a tree; duplicate root entries
// are settled afterwards by settle_duplicates().
class header_reader : public json_sax_base {
 public:
  explicit header_reader(std::string_view text) : text_(text) {}

  bool is_object = false;  // the document is a JSON object
  std::vector<header_tensor> tensors;

  bool on_object_begin(error_code&) {
    if (depth_ == 0) is_object = true;
    value(false);
    ++depth_;
    return true;
  }
  bool on_object_end(std::size_t, error_code&) {
    --depth_;
    return true;
  }
  bool on_array_begin(error_code&) {
    value(false);
    if (depth_ == 2 && offsets_key_) {
      in_offsets_ = true;
      offsets_ = {};
    }
    ++depth_;
    return true;
  }
  bool on_array_end(std::size_t, error_code&) {
    --depth_;
    if (depth_ == 2 && in_offsets_) {
      in_offsets_ = false;
      const auto& [count, begin, end] = offsets_;
      auto& tensor = tensors.back();
      tensor.valid = count == 2 && begin && end && *begin >= 0 && *end >= *begin;
      tensor.end = tensor.valid ? static_cast<std::uint64_t>(*end) : 0;
    }
    return true;
  }
  bool on_key(json::string_view s, std::size_t, error_code&) {
    const std::string_view key = whole_key(s);
    if (depth_ == 1) {
      in_tensor_ = key != "__metadata__";
      offsets_key_ = false;
      if (in_tensor_) tensors.push_back({stable(key)});
    } else if (depth_ == 2 && in_tensor_) {
      offsets_key_ = key == "data_offsets";
    }
    return true;
  }
  bool on_string(json::string_view, std::size_t, error_code&) { return value(false); }
  bool on_int64(std::int64_t i, json::string_view, error_code&) { return value(true, i); }
  bool on_uint64(std::uint64_t u, json::string_view, error_code&) {
    const auto integer = fitting_int64(u);
    return value(integer.has_value(), integer.value_or(0));
  }
  bool on_double(double, json::string_view, error_code&) { return value(false); }
  bool on_bool(bool, error_code&) { return value(false); }
  bool on_null(error_code&) { return value(false); }

 private:
  // A value begins at the current depth: a new data_offsets (at depth 2)
  // makes its tensor invalid until its array closes with two good integers;
  // the elements of that array (depth 3) are counted and the first two kept.
  bool value(bool is_integer, std::int64_t integer = 0) {
    if (depth_ == 2 && offsets_key_) {
      tensors.back().valid = false;
      tensors.back().end = 0;
    } else if (depth_ == 3 && in_offsets_) {
      auto& [count, begin, end] = offsets_;
      const auto element = is_integer ? std::optional<std::int64_t>(integer) : std::nullopt;
      if (count == 0) begin = element;
      if (count == 1) end = element;
      ++count;
    }
    return true;
  }

  // `key` where it outlives the parse: a key without escapes lies in the
  // header text; one with escapes is copied (no writer makes such names).
  std::string_view stable(std::string_view key) {
    const std::less_equal<const char*> before;
    if (before(text_.data(), key.data()) &&
        before(key.data() + key.size(), text_.data() + text_.size())) {
      return key;
    }
    return unescaped_keys_.emplace_back(key);
  }

  struct offsets {
    std::size_t count = 0;
    std::optional<std::int64_t> begin;
    std::optional<std::int64_t> end;
  };

  std::string_view text_;
  std::deque<std::string> unescaped_keys_;  // a deque: its strings never move
  int depth_ = 0;
  bool in_tensor_ = false;    // the root key is not "__metadata__"
  bool offsets_key_ = false;  // ... and the key in its object is "data_offsets"
  bool in_offsets_ = false;   // inside that key's array
  offsets offsets_;
};

// A root key written twice keeps its first place and takes its last value,
// as a boost::json object does: the later entries of a name supersede the
// earlier ones and give their verdict to the first. No writer repeats a
// tensor name, but the problem reported must be the one a tree gave.
void settle_duplicates(std::vector<header_tensor>& tensors) {
  if (tensors.size() < 2) return;
  // Sorted by the name's hash, then the name, then the place: each name's
  // entries form a run, first to last. The hash settles almost every
  // comparison without comparing names, which share long prefixes
  // ("model.layers.12.mlp..."): sorting by name was a third of the check.
  struct entry {
    std::size_t hash;
    std::size_t place;
  };
  std::vector<entry> order;
  order.reserve(tensors.size());
  const std::hash<std::string_view> hash;
  for (std::size_t i = 0; i < tensors.size(); ++i) order.push_back({hash(tensors[i].name), i});
  const auto key = [&](const entry& e) { return std::tie(e.hash, tensors[e.place].name, e.place); };
  std::sort(order.begin(), order.end(),
            [&](const entry& a, const entry& b) { return key(a) < key(b); });
  const auto same_name = [&](const entry& a, const entry& b) {
    return a.hash == b.hash && tensors[a.place].name == tensors[b.place].name;
  };
  for (std::size_t run = 0; run < order.size();) {
    std::size_t next = run + 1;
    while (next < order.size() && same_name(order[next], order[run])) ++next;
    if (next - run > 1) {
      auto& first = tensors[order[run].place];
      const auto& last = tensors[order[next - 1].place];
      first.valid = last.valid;
      first.end = last.end;
      for (std::size_t i = run + 1; i < next; ++i) tensors[order[i].place].superseded = true;
    }
    run = next;
  }
}

// Checks an index and, when `shards` is given, returns the rels it covers.
std::string index_problem_impl(const candidate_view& c, const file_info& index,
                               std::vector<std::string>* shards) {
  const label what(c, index);
  std::string problem;
  const auto text = read_small_file(c, index, max_index_bytes, problem);
  if (!text) return problem;
  json_arena arena;
  boost::system::error_code ec;
  const auto root = parse_python_json(*text, ec, arena.storage());
  if (ec) return what + ": not valid JSON (" + ec.message() + "); truncated or still being written";
  const auto* obj = root.if_object();
  const auto* map = obj ? obj->if_contains("weight_map") : nullptr;
  const auto* weight_map = map ? map->if_object() : nullptr;
  if (!weight_map) return what + ": no weight_map object";

  std::set<std::string_view> names;
  for (const auto& entry : *weight_map) {
    const auto* name = entry.value().if_string();
    if (!name)
      return what + ": weight_map value for \"" + std::string(entry.key()) + "\" is not a string";
    names.insert(std::string_view(*name));
    if (names.size() > max_index_shards) return what + ": lists implausibly many shards";
  }
  if (names.empty()) return what + ": weight_map names no shard";

  const auto slash = index.rel.rfind('/');
  const std::string dir =
      slash == std::string::npos ? std::string() : index.rel.substr(0, slash + 1);
  for (const auto name : names) {
    if (!is_safe_relative(name) || is_index_name(name)) {
      return what + ": shard name \"" + std::string(name) + "\" is not a plain relative file name";
    }
    const std::string rel = dir + std::string(name);
    const auto* shard = find_file(c, rel);
    if (!shard || shard->is_dir) return what + ": listed shard " + rel + " is missing";
    if (auto p = weight_file_problem(c, *shard); !p.empty()) return p;
    if (shards) shards->push_back(rel);
  }
  return {};
}

}  // namespace

const file_info* find_file(const candidate_view& c, std::string_view rel) {
  const auto& files = c.files();
  const auto it =
      std::lower_bound(files.begin(), files.end(), rel,
                       [](const file_info& f, std::string_view r) { return f.rel < r; });
  return it != files.end() && it->rel == rel ? &*it : nullptr;
}

std::string safetensors_problem(const candidate_view& c, const file_info& f) {
  const label what(c, f);
  if (f.is_dir) return what + ": is a folder, not a safetensors file";
  if (f.size < 8) return what + ": shorter than the 8-byte header length; still being written?";
  // One read covers the length and, for all but huge headers, the header
  // itself: a second open and read only when the header is longer.
  const auto head = c.read(f.rel, 0, std::min<std::uint64_t>(f.size, safetensors_first_read_bytes));
  if (!head) return what + ": cannot be read (gone?)";
  if (head->size() < 8) return what + ": shrank while being read";
  const std::uint64_t header_bytes = load_le(*head, 0, 8);
  if (header_bytes < 2 || header_bytes > max_safetensors_header_bytes) {
    return what + ": header length " + std::to_string(header_bytes) + " is implausible";
  }
  if (header_bytes > f.size - 8)
    return what + ": truncated inside its header; still being written?";
  std::optional<std::string> long_header;
  if (head->size() - 8 < header_bytes) {
    long_header = c.read(f.rel, 8, header_bytes);
    if (!long_header) return what + ": cannot be read (gone?)";
    if (long_header->size() < header_bytes) return what + ": shrank while being read";
  }
  const std::string_view header = long_header ? std::string_view(*long_header)
                                              : std::string_view(*head).substr(8, header_bytes);

  json::basic_parser<header_reader> parser{json::parse_options{}, header};
  boost::system::error_code ec;
  parse_all(parser, header, ec);
  auto& reader = parser.handler();
  if (ec || !reader.is_object) return what + ": header is not a JSON object";
  settle_duplicates(reader.tensors);
  std::uint64_t data_end = 0;
  for (const auto& tensor : reader.tensors) {
    if (tensor.superseded) continue;
    if (!tensor.valid) {
      return what + ": tensor \"" + std::string(tensor.name) + "\" has no valid data_offsets";
    }
    data_end = std::max(data_end, tensor.end);
  }
  if (data_end > std::numeric_limits<std::uint64_t>::max() - 8 - header_bytes) {
    return what + ": data_offsets are implausible";
  }
  const std::uint64_t expected = 8 + header_bytes + data_end;
  if (f.size < expected) {
    return what + ": " + std::to_string(f.size) + " bytes, header promises " +
           std::to_string(expected) + "; truncated or still being written";
  }
  if (f.size > expected) {
    return what + ": " + std::to_string(f.size) + " bytes, header promises only " +
           std::to_string(expected);
  }
  return {};
}

std::string zip_problem(const candidate_view& c, const file_info& f) {
  const label what(c, f);
  if (f.is_dir) return what + ": is a folder, not a ZIP archive";
  if (f.size < zip_end_bytes)
    return what + ": too short for a ZIP end record; still being written?";
  const std::uint64_t tail_bytes = std::min<std::uint64_t>(f.size, zip_tail_bytes);
  const std::uint64_t tail_offset = f.size - tail_bytes;
  const auto tail = c.read(f.rel, tail_offset, tail_bytes);
  if (!tail) return what + ": cannot be read (gone?)";
  if (tail->size() != tail_bytes) return what + ": changed size while being read";
  const std::string_view t = *tail;

  // Scan backwards: the end record normally sits in the last 22 bytes; the
  // comment-length rule makes a stray signature inside compressed data match
  // only by a very unlikely coincidence.
  for (std::size_t p = t.size() - zip_end_bytes + 1; p-- > 0;) {
    if (t.compare(p, 4, zip_end_signature) != 0) continue;
    const std::uint64_t comment_bytes = load_le(t, p + 20, 2);
    if (p + zip_end_bytes + comment_bytes != t.size()) continue;
    const std::uint64_t end_at = tail_offset + p;
    const std::uint64_t directory_bytes = load_le(t, p + 12, 4);
    const std::uint64_t directory_at = load_le(t, p + 16, 4);
    if (directory_bytes != zip_field_in_zip64 && directory_at != zip_field_in_zip64 &&
        directory_at + directory_bytes == end_at) {
      return {};
    }
    // ZIP64 (what torch.save's writer produces): a locator right before the
    // end record points at the ZIP64 end record before it.
    if (p >= zip64_locator_bytes &&
        t.compare(p - zip64_locator_bytes, 4, zip64_locator_signature) == 0) {
      const std::uint64_t locator_at = end_at - zip64_locator_bytes;
      const std::uint64_t record_at = load_le(t, p - zip64_locator_bytes + 8, 8);
      if (record_at > locator_at || locator_at - record_at < zip64_end_min_bytes) continue;
      if (record_at >= tail_offset &&
          t.compare(record_at - tail_offset, 4, zip64_end_signature) != 0) {
        continue;
      }
      return {};
    }
  }
  return what + ": no ZIP end record at the end; truncated or still being written";
}

std::string index_problem(const candidate_view& c, const file_info& index) {
  return index_problem_impl(c, index, nullptr);
}

std::string weight_file_problem(const candidate_view& c, const file_info& f) {
  if (ends_with(f.rel, ".safetensors")) return safetensors_problem(c, f);
  if (is_index_name(f.rel)) return index_problem(c, f);
  if (is_torch_save_name(f.rel)) return zip_problem(c, f);
  return {};
}

std::string weight_set_problem(const candidate_view& c,
                               const std::vector<const file_info*>& weights) {
  if (weights.empty()) return "no weight files";
  std::vector<std::string> covered;
  for (const auto* f : weights) {
    if (!is_index_name(f->rel)) continue;
    if (auto p = index_problem_impl(c, *f, &covered); !p.empty()) return p;
  }
  std::sort(covered.begin(), covered.end());
  for (const auto* f : weights) {
    if (is_index_name(f->rel) || std::binary_search(covered.begin(), covered.end(), f->rel)) {
      continue;
    }
    if (is_shard_name(f->rel)) {
      return label(c, *f) + ": a shard, but no index names it; index not written yet?";
    }
    if (auto p = weight_file_problem(c, *f); !p.empty()) return p;
  }
  return {};
}

std::optional<std::string> read_small_file(const candidate_view& c, const file_info& f,
                                           std::uint64_t max_bytes, std::string& problem) {
  const label what(c, f);
  const auto too_large = [&](std::uint64_t size) {
    problem = what + ": " + std::to_string(size) + " bytes, more than the " +
              std::to_string(max_bytes) + " this file can plausibly have";
  };
  if (f.is_dir) {
    problem = what + ": is a folder";
    return std::nullopt;
  }
  if (f.size > max_bytes) {
    too_large(f.size);
    return std::nullopt;
  }
  // One byte more than the limit tells a file that grew past it since listing.
  auto text = c.read(f.rel, 0, max_bytes + 1);
  if (!text) {
    problem = what + ": cannot be read (gone?)";
    return std::nullopt;
  }
  if (text->size() > max_bytes) {
    too_large(text->size());
    return std::nullopt;
  }
  return text;
}

boost::json::value parse_python_json(std::string_view text, boost::system::error_code& ec,
                                     boost::json::storage_ptr sp) {
  std::string rewritten;
  return boost::json::parse(standard_json(text, rewritten), ec, std::move(sp));
}

std::string_view standard_json(std::string_view text, std::string& rewritten) {
  // Every literal to swap holds an 'N' or an 'I', which a trainer_state.json
  // without a NaN loss has nowhere (its keys are lower case): two find()s
  // (memchr) then spare the byte-by-byte walk below.
  if (text.find('N') == std::string_view::npos && text.find('I') == std::string_view::npos) {
    return text;
  }
  // Outside strings, a letter can only start true, false or null in real JSON,
  // so NaN / Infinity there are Python's literals and can be swapped safely.
  rewritten.clear();
  std::size_t copied = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      if (ch == '\\') {
        ++i;
      } else if (ch == '"') {
        in_string = false;
      }
      continue;
    }
    if (ch == '"') {
      in_string = true;
      continue;
    }
    // Only these three bytes can start a literal to swap: skip the compares
    // for every other byte (this loop runs over every trainer_state.json).
    if (ch != 'N' && ch != 'I' && ch != '-') continue;
    std::size_t length = 0;
    if (text.compare(i, 3, "NaN") == 0) {
      length = 3;
    } else if (text.compare(i, 8, "Infinity") == 0) {
      length = 8;
    } else if (text.compare(i, 9, "-Infinity") == 0) {
      length = 9;
    }
    if (length == 0) continue;
    // Room for the copy up front ("null" is one byte longer than "NaN"), so a
    // log_history full of NaN losses does not regrow it at every one.
    if (copied == 0) rewritten.reserve(text.size() + text.size() / 8 + 8);
    rewritten.append(text.substr(copied, i - copied));
    rewritten.append("null");
    i += length - 1;
    copied = i + 1;
  }
  if (copied == 0) return text;
  rewritten.append(text.substr(copied));
  return rewritten;
}

std::optional<double> json_number(const boost::json::value& v) {
  if (const auto* d = v.if_double()) return *d;
  if (const auto* i = v.if_int64()) return static_cast<double>(*i);
  if (const auto* u = v.if_uint64()) return static_cast<double>(*u);
  return std::nullopt;
}

std::optional<std::int64_t> json_integer(const boost::json::value& v) {
  if (const auto* i = v.if_int64()) return *i;
  if (const auto* u = v.if_uint64()) return fitting_int64(*u);
  return std::nullopt;
}

std::optional<std::int64_t> parse_decimal(std::string_view digits, bool allow_padding) {
  if (digits.empty() || digits.size() > max_decimal_digits) return std::nullopt;
  if (!allow_padding && digits.size() > 1 && digits.front() == '0') return std::nullopt;
  std::int64_t value = 0;
  for (const char ch : digits) {
    if (ch < '0' || ch > '9') return std::nullopt;
    value = value * 10 + (ch - '0');
  }
  return value;
}

std::optional<double> parse_float(std::string_view text) {
  if (text.empty()) return std::nullopt;
  double value = 0;
  const auto* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value, std::chars_format::general);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

std::string_view trim_ascii(std::string_view s) {
  const auto space = [](char ch) {
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
  };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

std::vector<name_field> name_fields(std::string_view stem) {
  // Where each key starts: just after the last '-' before its '=' (or at the
  // start), provided the key is not empty and holds no '='.
  struct key_span {
    std::size_t begin;
    std::size_t equals;
  };
  std::vector<key_span> keys;
  std::size_t key_begin = 0;
  for (std::size_t i = 0; i < stem.size(); ++i) {
    if (stem[i] == '-') {
      key_begin = i + 1;
    } else if (stem[i] == '=') {
      if (i > key_begin) keys.push_back({key_begin, i});
      key_begin = std::string_view::npos;  // no key until the next '-'
    }
  }
  std::vector<name_field> out;
  for (std::size_t k = 0; k < keys.size(); ++k) {
    const std::size_t value_begin = keys[k].equals + 1;
    // The value ends at the '-' that precedes the next key.
    const std::size_t value_end = k + 1 < keys.size() ? keys[k + 1].begin - 1 : stem.size();
    if (value_end < value_begin) continue;
    out.push_back({stem.substr(keys[k].begin, keys[k].equals - keys[k].begin),
                   stem.substr(value_begin, value_end - value_begin)});
  }
  return out;
}

metric_role role_of_metric(std::string_view name) {
  for (const std::string_view n : {"loss", "train_loss", "training_loss", "reduced_train_loss"}) {
    if (name == n) return metric_role::train_loss;
  }
  for (const std::string_view n : {"val_loss", "val/loss", "validation_loss", "eval_loss"}) {
    if (name == n) return metric_role::validation_loss;
  }
  if (name == "perplexity" || name == "val_perplexity") return metric_role::perplexity;
  return metric_role::none;
}

std::optional<store::training_metrics> metrics_if_known(std::int64_t epoch,
                                                        std::optional<double> train_loss,
                                                        std::optional<double> validation_loss,
                                                        std::optional<double> perplexity,
                                                        std::string& note) {
  if (!train_loss || !validation_loss) {
    note = !train_loss && !validation_loss ? "no training or validation loss recorded"
           : !validation_loss              ? "no validation loss recorded"
                                           : "no training loss recorded";
    note += ", so no metrics";
    return std::nullopt;
  }
  const double ppl = perplexity ? *perplexity : std::exp(*validation_loss);
  if (!std::isfinite(*train_loss) || !std::isfinite(*validation_loss) || !std::isfinite(ppl)) {
    note = "the losses or the perplexity are not finite, so no metrics";
    return std::nullopt;
  }
  return store::training_metrics{epoch, *train_loss, *validation_loss, ppl};
}

namespace {

constexpr std::uint64_t tar_block_bytes = 512;

bool all_zero(std::string_view block) {
  return std::all_of(block.begin(), block.end(), [](char ch) { return ch == '\0'; });
}

// An octal tar number field (NUL- or space-terminated, leading spaces
// allowed), or GNU's base-256 form (high bit of the first byte set).
std::optional<std::uint64_t> tar_number(std::string_view field) {
  if (!field.empty() && (static_cast<unsigned char>(field[0]) & 0x80) != 0) {
    if ((static_cast<unsigned char>(field[0]) & 0x40) != 0) return std::nullopt;  // negative
    std::uint64_t v = static_cast<unsigned char>(field[0]) & 0x3F;
    for (std::size_t i = 1; i < field.size(); ++i) {
      if (v > (std::numeric_limits<std::uint64_t>::max() >> 8)) return std::nullopt;
      v = (v << 8) | static_cast<unsigned char>(field[i]);
    }
    return v;
  }
  std::size_t i = 0;
  while (i < field.size() && field[i] == ' ') ++i;
  std::uint64_t v = 0;
  std::size_t digits = 0;
  for (; i < field.size() && field[i] >= '0' && field[i] <= '7'; ++i, ++digits) {
    v = (v << 3) | static_cast<std::uint64_t>(field[i] - '0');
  }
  if (digits == 0 && !(i < field.size() && field[i] == '\0')) return std::nullopt;
  for (; i < field.size(); ++i) {
    if (field[i] != '\0' && field[i] != ' ') return std::nullopt;
  }
  return v;
}

// The header checksum: the byte sum with the checksum field read as spaces.
// Old writers summed signed chars, so either sum is accepted.
bool tar_checksum_holds(std::string_view block) {
  const auto stored = tar_number(block.substr(148, 8));
  if (!stored) return false;
  std::int64_t unsigned_sum = 0;
  std::int64_t signed_sum = 0;
  for (std::size_t i = 0; i < block.size(); ++i) {
    const char ch = i >= 148 && i < 156 ? ' ' : block[i];
    unsigned_sum += static_cast<unsigned char>(ch);
    signed_sum += static_cast<signed char>(ch);
  }
  return static_cast<std::int64_t>(*stored) == unsigned_sum ||
         static_cast<std::int64_t>(*stored) == signed_sum;
}

}  // namespace

std::string tar_problem(const candidate_view& c, const file_info& f) {
  const label what(c, f);
  if (f.is_dir) return what + ": is a folder, not a tar archive";
  const auto block_at = [&](std::uint64_t offset) -> std::optional<std::string> {
    auto b = c.read(f.rel, offset, tar_block_bytes);
    if (b && b->size() != tar_block_bytes) return std::nullopt;
    return b;
  };
  std::uint64_t offset = 0;
  for (std::size_t members = 0; members <= max_tar_members; ++members) {
    if (offset + tar_block_bytes > f.size) {
      return what + ": ends inside the archive (no end blocks); truncated or still being written";
    }
    const auto block = block_at(offset);
    if (!block) return what + ": cannot be read (gone or shrinking?)";
    if (all_zero(*block)) {
      if (offset == 0) return what + ": starts with a zero block; not a tar archive";
      if (offset + 2 * tar_block_bytes > f.size) {
        return what + ": only one end block; truncated or still being written";
      }
      const auto second = block_at(offset + tar_block_bytes);
      if (!second) return what + ": cannot be read (gone or shrinking?)";
      if (!all_zero(*second)) return what + ": a lone zero block inside the archive";
      return {};
    }
    if (!tar_checksum_holds(*block)) {
      return what + ": no valid tar header at byte " + std::to_string(offset) +
             "; not a tar archive, or damaged";
    }
    const auto size = tar_number(std::string_view(*block).substr(124, 12));
    if (!size || *size > f.size) {
      return what + ": member at byte " + std::to_string(offset) +
             " claims more data than the file holds; truncated or still being written";
    }
    const std::uint64_t data_blocks = (*size + tar_block_bytes - 1) / tar_block_bytes;
    offset += tar_block_bytes * (1 + data_blocks);
  }
  return what + ": more than " + std::to_string(max_tar_members) + " members";
}

bool is_gzip(const candidate_view& c, const file_info& f) {
  const auto head = c.read(f.rel, 0, 2);
  return head && *head == "\x1f\x8b";
}

void fingerprint_hash::add(const file_info& f) {
  add(f.rel);
  add(f.size);
  add(static_cast<std::uint64_t>(f.mtime_ns));
}

void fingerprint_hash::add(std::string_view bytes) {
  add(static_cast<std::uint64_t>(bytes.size()));  // keeps "ab"+"c" apart from "a"+"bc"
  for (const char ch : bytes) {
    state_ ^= static_cast<unsigned char>(ch);
    state_ *= 0x100000001b3ull;
  }
}

void fingerprint_hash::add(std::uint64_t number) {
  for (int i = 0; i < 8; ++i) {
    state_ ^= (number >> (8 * i)) & 0xFF;
    state_ *= 0x100000001b3ull;
  }
}

std::string fingerprint_hash::hex() const {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 0; i < 16; ++i) out[15 - i] = digits[(state_ >> (4 * i)) & 0xF];
  return out;
}

bool complete_when_whole_zips(const candidate_view& c,
                              const std::vector<const file_info*>& archives, std::string_view tag,
                              recognition& r) {
  fingerprint_hash hash;
  for (const auto* f : archives) {
    if (auto p = zip_problem(c, *f); !p.empty()) {
      r.problem = std::move(p);
      return false;
    }
    hash.add(*f);
    r.completed_at_ns = std::max(r.completed_at_ns, f->mtime_ns);
  }
  r.verdict = state::complete;
  r.fingerprint = std::string(tag) + ":" + std::to_string(archives.size()) + ":" + hash.hex();
  return true;
}

}  // namespace ckptd::watcher
