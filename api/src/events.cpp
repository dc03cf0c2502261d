#include "events.hpp"

#include <ckptd/checkpoint_json.hpp>

#include <utility>

namespace ckptd::api {
namespace {

// Each line of `text` as a "data:" line; CR, LF and CRLF all end a line, as
// they do for the client's parser.
void append_data_lines(std::string& out, std::string_view text) {
  for (;;) {
    const std::size_t end = text.find_first_of("\r\n");
    out += "data: ";
    out += text.substr(0, end);
    out += '\n';
    if (end == std::string_view::npos) break;
    const std::size_t skip =
        (text[end] == '\r' && end + 1 < text.size() && text[end + 1] == '\n') ? 2 : 1;
    text.remove_prefix(end + skip);
  }
}

}  // namespace

void append_sse_event(std::string& out, const store::event& e) {
  out += "id: ";
  json_text::append_integer(out, static_cast<std::int64_t>(e.seq));
  out += "\nevent: ";
  out += e.type;  // the store refuses types holding CR, LF or NUL
  out += '\n';
  append_data_lines(out, e.data);
  out += '\n';
}

void append_sse_reset(std::string& out, std::uint64_t id, std::uint64_t last_event_id,
                      std::string_view reason) {
  out += "id: ";
  out += std::to_string(id);
  out += "\nevent: reset\ndata: {\"reason\":";
  json_text::append_string(out, reason);
  out += ",\"last_event_id\":";
  out += std::to_string(last_event_id);
  out += "}\n\n";
}

void append_sse_id(std::string& out, std::uint64_t id) {
  out += "id: ";
  out += std::to_string(id);
  out += "\n\n";
}

void event_ring::push(store::event e) {
  if (e.seq > last_seq_) last_seq_ = e.seq;
  if (capacity_ == 0) return;
  if (events_.size() == capacity_) events_.pop_front();
  events_.push_back(std::move(e));
}

void event_ring::set_capacity(std::size_t capacity) {
  capacity_ = capacity;
  while (events_.size() > capacity_) events_.pop_front();
}

bool event_ring::covers(std::uint64_t after) const {
  if (after > last_seq_) return false;
  if (after == last_seq_) return last_seq_ != 0;
  return !events_.empty() && events_.front().seq <= after + 1;
}

}  // namespace ckptd::api
