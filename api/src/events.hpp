#pragma once
// Server-Sent Events: the wire form of store events, and the ring of recent
// events that serves most reconnecting clients without reading the store.
//
// Pure; the server keeps its ring on the io_context's thread.
//
// Each event goes out as
//   id: <seq>
//   event: <type>            checkpoint.created | checkpoint.deleted | job.status
//   data: <the store event's data, one "data:" line per line of it>
//   <blank line>
// A client that reconnects with Last-Event-ID: L gets every event after L.
// When those are no longer retained (or L is not from this index), it gets
//   id: <latest seq>
//   event: reset
//   data: {"reason":"...","last_event_id":L}
// instead, and should re-read the job routes; events after <latest seq>
// follow. A line ": ping" is a comment (a heartbeat), and a frame of only
// "id: <seq>" (sent first on a fresh stream) sets the client's last event id
// without being an event, so a client that reconnects before any event
// arrives still misses nothing.

#include <ckptd/store.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

namespace ckptd::api {

// Appends the event's frame.
void append_sse_event(std::string& out, const store::event& e);
// Appends a reset frame (see above).
void append_sse_reset(std::string& out, std::uint64_t id, std::uint64_t last_event_id,
                      std::string_view reason);
// Appends a frame that only sets the client's last event id.
void append_sse_id(std::string& out, std::uint64_t id);

constexpr std::string_view sse_heartbeat = ": ping\n\n";

class event_ring {
 public:
  explicit event_ring(std::size_t capacity) : capacity_(capacity) {}

  // Appends an event (seqs ascending); the oldest go beyond the capacity.
  void push(store::event e);
  // Shrinks or grows the bound; the oldest go first.
  void set_capacity(std::size_t capacity);

  // True when every event after `after` that was pushed is still held, so a
  // client that saw `after` can be served from here alone. False when
  // `after` is newer than anything pushed (it may come from an earlier run).
  [[nodiscard]] bool covers(std::uint64_t after) const;
  // The seq of the newest event pushed (held or not); 0 before any.
  [[nodiscard]] std::uint64_t last_seq() const { return last_seq_; }
  // The seq of the oldest event held; 0 when empty.
  [[nodiscard]] std::uint64_t first_seq() const {
    return events_.empty() ? 0 : events_.front().seq;
  }
  [[nodiscard]] std::size_t size() const { return events_.size(); }

  // Calls f(event) for each held event with seq > after, oldest first.
  template <typename F>
  void for_each_after(std::uint64_t after, F f) const {
    for (const store::event& e : events_) {
      if (e.seq > after) f(e);
    }
  }

 private:
  std::deque<store::event> events_;
  std::size_t capacity_;
  std::uint64_t last_seq_ = 0;
};

}  // namespace ckptd::api
