#pragma once
// What the watcher's boost::json::basic_parser handlers share: they read a
// few values while a file is parsed, instead of building its document tree
// (trainer_state.json in trainer_state.cpp, safetensors headers in
// formats.cpp).

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/string_view.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace ckptd::watcher {

// A handler derives from this and adds the value and key callbacks it needs.
// No limits of its own: the parser's nesting limit and the caller's bound on
// the input are the limits, as in a parse into values.
class json_sax_base {
 public:
  static constexpr std::size_t max_object_size = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t max_array_size = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t max_key_size = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t max_string_size = std::numeric_limits<std::size_t>::max();

  bool on_document_begin(boost::system::error_code&) { return true; }
  bool on_document_end(boost::system::error_code&) { return true; }
  bool on_string_part(boost::json::string_view, std::size_t, boost::system::error_code&) {
    return true;
  }
  bool on_number_part(boost::json::string_view, boost::system::error_code&) { return true; }
  bool on_comment_part(boost::json::string_view, boost::system::error_code&) { return true; }
  bool on_comment(boost::json::string_view, boost::system::error_code&) { return true; }

  // A key comes in parts only when it holds escapes (the input is never
  // split): the parts are gathered, and whole_key() adds the last one. Every
  // on_key must call whole_key(), which ends the gathering.
  bool on_key_part(boost::json::string_view s, std::size_t, boost::system::error_code&) {
    if (!gathering_) key_.clear();
    gathering_ = true;
    key_.append(s.data(), s.size());
    return true;
  }

 protected:
  // The key whose last part on_key got as `s`: `s` itself when the key came
  // whole (the common case, no copy), else the gathered parts. Valid until
  // the next key. `s` lies in the input only when the key has no escapes;
  // otherwise in the parser's own buffer.
  std::string_view whole_key(boost::json::string_view s) {
    if (!gathering_) return {s.data(), s.size()};
    gathering_ = false;
    key_.append(s.data(), s.size());
    return key_;
  }

 private:
  std::string key_;
  bool gathering_ = false;
};

// A JSON unsigned integer as the int64 the watcher reads integers as;
// nullopt when it does not fit (then it is no integer to any reader, and to
// json_integer neither).
inline std::optional<std::int64_t> fitting_int64(std::uint64_t u) {
  if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
  return static_cast<std::int64_t>(u);
}

// Parses all of `text` (whole, never in pieces) into the parser's handler.
// As boost::json::parse, anything but whitespace after the document is an
// error.
template <class Handler>
void parse_all(boost::json::basic_parser<Handler>& parser, std::string_view text,
               boost::system::error_code& ec) {
  const std::size_t used = parser.write_some(false, text.data(), text.size(), ec);
  if (!ec && used < text.size()) ec = boost::json::error::extra_data;
}

}  // namespace ckptd::watcher
