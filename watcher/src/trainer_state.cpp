#include "trainer_state.hpp"

#include "formats.hpp"
#include "json_sax.hpp"

#include <limits>
#include <string>
#include <string_view>

namespace ckptd::watcher {
namespace {

namespace json = boost::json;
using boost::system::error_code;

// The parser's handler: it follows the nesting (depth_: containers open) and
// keeps only the root keys and log_history entries it knows.
class state_reader : public json_sax_base {
 public:
  trainer_state state;

  bool on_object_begin(error_code&) {
    value(kind::object);
    if (depth_ == 0) state.is_object = true;
    if (depth_ == 2 && in_history_) {
      state.log_history.emplace_back();
      in_entry_ = true;
    }
    ++depth_;
    return true;
  }
  bool on_object_end(std::size_t, error_code&) {
    --depth_;
    if (depth_ == 2) in_entry_ = false;
    return true;
  }
  bool on_array_begin(error_code&) {
    value(kind::array);
    ++depth_;
    return true;
  }
  bool on_array_end(std::size_t, error_code&) {
    --depth_;
    if (depth_ == 1) in_history_ = false;
    return true;
  }

  // Only keys of the root object and of log_history's objects matter; the
  // dozens of others in a file cost a depth check each.
  bool on_key(json::string_view s, std::size_t, error_code&) {
    const std::string_view key = whole_key(s);
    if (depth_ == 1) {
      root_key_ = key == "global_step"   ? root_key::global_step
                  : key == "epoch"       ? root_key::epoch
                  : key == "log_history" ? root_key::log_history
                                         : root_key::other;
    } else if (depth_ == 3 && in_entry_) {
      entry_key_ = key == "step"        ? entry_key::step
                   : key == "loss"      ? entry_key::loss
                   : key == "eval_loss" ? entry_key::eval_loss
                                        : entry_key::other;
    }
    return true;
  }

  bool on_string(json::string_view, std::size_t, error_code&) {
    value(kind::other);
    return true;
  }
  bool on_int64(std::int64_t i, json::string_view, error_code&) {
    value(kind::number, i, static_cast<double>(i));
    return true;
  }
  bool on_uint64(std::uint64_t u, json::string_view, error_code&) {
    value(kind::number, fitting_int64(u), static_cast<double>(u));
    return true;
  }
  bool on_double(double d, json::string_view, error_code&) {
    value(kind::number, std::nullopt, d);
    return true;
  }
  bool on_bool(bool, error_code&) {
    value(kind::other);
    return true;
  }
  bool on_null(error_code&) {
    value(kind::null);
    return true;
  }

 private:
  enum class kind { object, array, number, null, other };
  enum class root_key { other, global_step, epoch, log_history };
  enum class entry_key { other, step, loss, eval_loss };

  // A value begins at the current depth: a root key's or an entry key's
  // value is recorded, replacing what an earlier duplicate key gave.
  void value(kind k, std::optional<std::int64_t> integer = std::nullopt, double number = 0) {
    if (depth_ == 1 && state.is_object) {
      switch (root_key_) {
        case root_key::global_step:
          state.global_step = k == kind::number ? integer : std::nullopt;
          break;
        case root_key::epoch:
          state.has_epoch = true;
          state.epoch_is_null = k == kind::null;
          state.epoch = k == kind::number ? std::optional<double>(number) : std::nullopt;
          break;
        case root_key::log_history:
          state.has_log_history = k == kind::array;
          state.log_history.clear();
          in_history_ = k == kind::array;
          // Room for a short history at once, rather than growing from one
          // entry (a long run's history still grows geometrically).
          if (in_history_) state.log_history.reserve(history_reserve);
          break;
        case root_key::other:
          break;
      }
    } else if (depth_ == 3 && in_entry_) {
      auto& entry = state.log_history.back();
      const double loss = k == kind::number ? number : std::numeric_limits<double>::quiet_NaN();
      switch (entry_key_) {
        case entry_key::step:
          entry.step = k == kind::number ? integer : std::nullopt;
          break;
        case entry_key::loss:
          entry.loss = loss;
          break;
        case entry_key::eval_loss:
          entry.eval_loss = loss;
          break;
        case entry_key::other:
          break;
      }
    }
  }

  static constexpr std::size_t history_reserve = 8;

  int depth_ = 0;
  root_key root_key_ = root_key::other;
  entry_key entry_key_ = entry_key::other;
  bool in_history_ = false;  // inside the array of the last "log_history" key
  bool in_entry_ = false;    // inside one of its objects
};

}  // namespace

trainer_state read_trainer_state(std::string_view text, boost::system::error_code& ec) {
  std::string rewritten;
  const std::string_view standard = standard_json(text, rewritten);
  json::basic_parser<state_reader> parser{json::parse_options{}};
  parse_all(parser, standard, ec);
  return std::move(parser.handler().state);
}

}  // namespace ckptd::watcher
