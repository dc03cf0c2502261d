#pragma once
// What ckptd needs from a Hugging Face trainer_state.json, picked out while
// the file is parsed, without building its document tree: every checkpoint
// of a Trainer run has one, so this parse is most of the work of indexing a
// large tree (a tree of maps and strings per file cost twice as much).
//
// It reads exactly what a parse into boost::json values and lookups would:
// the same syntax (Python's NaN and Infinity read as null, as in
// parse_python_json), the same nesting limit, and the last of duplicate keys
// wins.

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace ckptd::watcher {

struct trainer_state {
  // One object of log_history.
  struct log_entry {
    std::optional<std::int64_t> step;  // an integer "step" (fits int64)
    // Present as a key: its number, NaN when it is not a number.
    std::optional<double> loss;
    std::optional<double> eval_loss;
  };

  bool is_object = false;                   // the document is a JSON object
  std::optional<std::int64_t> global_step;  // present and an integer
  bool has_epoch = false;                   // "epoch" present
  std::optional<double> epoch;              // ... and a number (unset: null or else)
  bool epoch_is_null = false;               // ... and null
  bool has_log_history = false;             // "log_history" present and an array
  std::vector<log_entry> log_history;       // its objects, in order (other elements skipped)
};

// Reads `text` (all of it); sets `ec` when it is not valid JSON.
trainer_state read_trainer_state(std::string_view text, boost::system::error_code& ec);

}  // namespace ckptd::watcher
