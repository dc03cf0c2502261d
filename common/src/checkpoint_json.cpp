#include <ckptd/checkpoint_json.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <tuple>

namespace ckptd::json_text {
namespace {

constexpr std::string_view replacement_character = "\xEF\xBF\xBD";  // U+FFFD

// How many bytes the sequence starting with `lead` has, and the range its
// second byte must fall in (the later ones are always 80..BF). Zero length
// means the byte cannot start a sequence.
struct lead_info {
  int length;
  unsigned char second_lo;
  unsigned char second_hi;
};

lead_info classify(unsigned char lead) {
  if (lead < 0x80) return {1, 0, 0};
  if (lead >= 0xC2 && lead <= 0xDF) return {2, 0x80, 0xBF};
  if (lead == 0xE0) return {3, 0xA0, 0xBF};  // no overlongs
  if (lead == 0xED) return {3, 0x80, 0x9F};  // no surrogates
  if (lead >= 0xE1 && lead <= 0xEF) return {3, 0x80, 0xBF};
  if (lead == 0xF0) return {4, 0x90, 0xBF};  // no overlongs
  if (lead >= 0xF1 && lead <= 0xF3) return {4, 0x80, 0xBF};
  if (lead == 0xF4) return {4, 0x80, 0x8F};  // nothing past U+10FFFF
  return {0, 0, 0};
}

// Length of the well-formed sequence at `i`, or 0 with `consumed` set to the
// length of the maximal ill-formed subpart (at least 1).
std::size_t well_formed_length(std::string_view text, std::size_t i, std::size_t& consumed) {
  const auto lead = static_cast<unsigned char>(text[i]);
  const lead_info info = classify(lead);
  if (info.length == 0) {
    consumed = 1;
    return 0;
  }
  for (int k = 1; k < info.length; ++k) {
    const std::size_t at = i + static_cast<std::size_t>(k);
    if (at >= text.size()) {
      consumed = static_cast<std::size_t>(k);
      return 0;
    }
    const auto byte = static_cast<unsigned char>(text[at]);
    const unsigned char lo = k == 1 ? info.second_lo : 0x80;
    const unsigned char hi = k == 1 ? info.second_hi : 0xBF;
    if (byte < lo || byte > hi) {
      consumed = static_cast<std::size_t>(k);
      return 0;
    }
  }
  return static_cast<std::size_t>(info.length);
}

bool is_valid_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {  // the common case, without the table lookup
      ++i;
      continue;
    }
    std::size_t consumed = 0;
    const std::size_t n = well_formed_length(text, i, consumed);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// How many leading bytes of `text` go into a JSON string as they are:
// printable ASCII other than '"' and '\\'. Eight bytes per step, as every
// checkpoint's path, identifier and job uuid passes through here for each
// body and event that carries it.
std::size_t plain_prefix(std::string_view text) {
  constexpr std::uint64_t ones = 0x0101010101010101ULL;
  constexpr std::uint64_t highs = 0x8080808080808080ULL;
  // Nonzero exactly when some byte of v is zero (or, for below, is less
  // than n, n <= 128): the usual bit tricks, exact for "any byte".
  const auto below = [](std::uint64_t v, std::uint64_t n) { return (v - ones * n) & ~v & highs; };
  std::size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    std::uint64_t word;
    std::memcpy(&word, text.data() + i, sizeof word);
    if (((word & highs) | below(word, 0x20) | below(word ^ (ones * '"'), 1) |
         below(word ^ (ones * '\\'), 1)) != 0) {
      break;
    }
  }
  for (; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
  }
  return i;
}

void append_escaped(std::string& out, std::string_view valid) {
  static constexpr char hex[] = "0123456789abcdef";
  std::size_t plain = 0;  // start of the run not yet copied
  for (std::size_t i = 0; i < valid.size(); ++i) {
    const auto c = static_cast<unsigned char>(valid[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(valid.substr(plain, i - plain));
    plain = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 0xF];
    }
  }
  out.append(valid.substr(plain));
}

}  // namespace

std::string to_valid_utf8(std::string_view text) {
  if (is_valid_utf8(text)) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  for (std::size_t i = 0; i < text.size();) {
    std::size_t consumed = 0;
    const std::size_t n = well_formed_length(text, i, consumed);
    if (n != 0) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      out.append(replacement_character);
      i += consumed;
    }
  }
  return out;
}

void append_rfc3339_utc(std::string& out, std::int64_t ns_since_epoch) {
  using namespace std::chrono;
  // Split in integers first: floor<days> of a nanosecond time_point turns the
  // day back into nanoseconds, which overflows near the ends of the int64
  // range (a damaged record, or a file dated 1677).
  constexpr std::int64_t ns_per_s = 1'000'000'000;
  constexpr std::int64_t s_per_day = 86'400;
  std::int64_t seconds_since = ns_since_epoch / ns_per_s;
  std::int64_t ns_in_second = ns_since_epoch % ns_per_s;
  if (ns_in_second < 0) {
    ns_in_second += ns_per_s;
    --seconds_since;
  }
  std::int64_t day_number = seconds_since / s_per_day;
  std::int64_t s_in_day = seconds_since % s_per_day;
  if (s_in_day < 0) {
    s_in_day += s_per_day;
    --day_number;
  }
  const year_month_day ymd{sys_days{days{day_number}}};
  const hh_mm_ss<microseconds> time{seconds{s_in_day} + microseconds{ns_in_second / 1000}};
  // Formatted by hand: every checkpoint of every body has one, and snprintf
  // was a tenth of the CPU of indexing a large tree. The int64 nanosecond
  // range spans the years 1677 to 2262: always four digits.
  char text[] = "0000-00-00T00:00:00.000000Z";
  const auto put = [&text](std::size_t at, std::size_t width, unsigned value) {
    for (std::size_t i = at + width; i > at; --i) {
      text[i - 1] = static_cast<char>('0' + value % 10);
      value /= 10;
    }
  };
  put(0, 4, static_cast<unsigned>(static_cast<int>(ymd.year())));
  put(5, 2, static_cast<unsigned>(ymd.month()));
  put(8, 2, static_cast<unsigned>(ymd.day()));
  put(11, 2, static_cast<unsigned>(time.hours().count()));
  put(14, 2, static_cast<unsigned>(time.minutes().count()));
  put(17, 2, static_cast<unsigned>(time.seconds().count()));
  put(20, 6, static_cast<unsigned>(time.subseconds().count()));
  out.append(text, sizeof text - 1);
}

std::string rfc3339_utc(std::int64_t ns_since_epoch) {
  std::string out;
  append_rfc3339_utc(out, ns_since_epoch);
  return out;
}

void append_string(std::string& out, std::string_view text) {
  out += '"';
  // Paths, identifiers and uuids are plain ASCII: copied in one go. The
  // rest starts at an ASCII boundary, so checking and repairing it alone
  // gives what checking and repairing the whole would.
  const std::size_t plain = plain_prefix(text);
  out.append(text.substr(0, plain));
  const std::string_view rest = text.substr(plain);
  if (!rest.empty()) {
    if (is_valid_utf8(rest)) {
      append_escaped(out, rest);
    } else {
      append_escaped(out, to_valid_utf8(rest));
    }
  }
  out += '"';
}

void append_number(std::string& out, double value) {
  if (!std::isfinite(value)) {
    out += "null";
    return;
  }
  // Shortest round-trip form: "%.17g" would print 0.1 as 0.10000000000000001.
  char text[32];
  const auto [end, ec] = std::to_chars(text, text + sizeof text, value);
  const std::string_view printed(text,
                                 ec == std::errc() ? static_cast<std::size_t>(end - text) : 0);
  out.append(printed);
  if (printed.find_first_of(".e") == std::string_view::npos) out += ".0";
}

void append_integer(std::string& out, std::int64_t value) {
  char text[24];
  const auto [end, ec] = std::to_chars(text, text + sizeof text, value);
  out.append(text, ec == std::errc() ? static_cast<std::size_t>(end - text) : 0);
}

bool metrics_writable(const store::training_metrics& m) {
  return std::isfinite(m.train_loss) && std::isfinite(m.validation_loss) &&
         std::isfinite(m.perplexity);
}

void append_checkpoint(std::string& out, const store::checkpoint& c, std::string_view job_uuid) {
  out += "{\"identifier\":";
  append_string(out, c.identifier);
  out += ",\"created_at\":\"";
  append_rfc3339_utc(out, c.created_at_ns);
  out += "\",\"epoch\":";
  append_integer(out, c.epoch);
  out += ",\"post_training_job_id\":";
  append_string(out, job_uuid);
  out += ",\"path\":";
  append_string(out, c.path);
  if (c.metrics && metrics_writable(*c.metrics)) {
    out += ",\"training_metrics\":{\"epoch\":";
    append_integer(out, c.metrics->epoch);
    out += ",\"train_loss\":";
    append_number(out, c.metrics->train_loss);
    out += ",\"validation_loss\":";
    append_number(out, c.metrics->validation_loss);
    out += ",\"perplexity\":";
    append_number(out, c.metrics->perplexity);
    out += '}';
  }
  out += '}';
}

std::string checkpoint(const store::checkpoint& c, std::string_view job_uuid) {
  std::string out;
  out.reserve(256 + c.path.size());
  append_checkpoint(out, c, job_uuid);
  return out;
}

void order_checkpoints(std::vector<store::checkpoint>& checkpoints) {
  std::sort(checkpoints.begin(), checkpoints.end(),
            [](const store::checkpoint& a, const store::checkpoint& b) {
              return std::tie(a.epoch, a.step, a.created_at_ns, a.path) <
                     std::tie(b.epoch, b.step, b.created_at_ns, b.path);
            });
}

void append_checkpoints(std::string& out, const std::vector<store::checkpoint>& ordered,
                        std::string_view job_uuid) {
  out += '[';
  bool first = true;
  for (const store::checkpoint& c : ordered) {
    if (!first) out += ',';
    first = false;
    append_checkpoint(out, c, job_uuid);
  }
  out += ']';
}

}  // namespace ckptd::json_text
