// ckptd's checkpoint manifest
// ===========================
//
// Any trainer can declare a folder a finished checkpoint by writing a file
// named `ckptd-checkpoint.json` into it, LAST, after every other file of the
// checkpoint is closed. The folder may have any name and any content; the
// manifest takes precedence over every other way ckptd recognises a
// checkpoint (a "checkpoint-400" folder holding a manifest is read from the
// manifest, not from trainer_state.json).
//
// The file is a JSON object. Every key is optional:
//
//   {
//     "identifier": "llama-3b-sft-epoch-2",  // string; default: the folder name
//     "epoch": 2,                            // integer >= 0; default: 0
//     "step": 1200,                          // integer >= 0; default: none
//     "training_metrics": {                  // default: no metrics
//       "train_loss": 1.83,                  //   number, required in the object
//       "validation_loss": 1.95,             //   number, required in the object
//       "perplexity": 7.03                   //   number; default: exp(validation_loss)
//     },
//     "status": "..."                        // reserved for later; ignored today
//   }
//
// Rules:
//  - The checkpoint's created_at is the manifest's modification time. A
//    rewritten manifest (new size or mtime) updates the checkpoint.
//  - "epoch" is the epoch the checkpoint belongs to, 0-based like
//    llama-stack's; without it the checkpoint counts as epoch 0. Integral
//    numbers written as floats (2.0) are accepted for "epoch" and "step".
//  - An empty "identifier" means the folder name.
//  - Python's NaN and Infinity are accepted in training_metrics and mean "no
//    metrics" (the API cannot carry them); the checkpoint is still listed.
//  - Unknown keys are ignored, so writers may add their own.
//  - Invalid JSON, a value of the wrong type, a negative epoch or step, or a
//    training_metrics object without both losses make the folder NOT a
//    checkpoint (until the manifest is fixed), and ckptd logs why.
//  - Write it last and whole: write it under a temporary name (for example
//    ckptd-checkpoint.json.tmp, which ckptd ignores) and rename it into place,
//    or write it directly and close it; ckptd re-reads it on every close.
//  - At most 4 MiB.

#include "formats.hpp"
#include "layouts.hpp"

#include <boost/json/value.hpp>

#include <cmath>

namespace ckptd::watcher {

namespace {

constexpr std::uint64_t max_manifest_bytes = 4ull << 20;
constexpr std::size_t max_identifier_bytes = 1024;
// 2^53: every integer below it is exact as a double.
constexpr double max_exact_integer = 9007199254740992.0;

// An integer, or a float with no fractional part (Python users write
// epoch / 1.0 by accident).
std::optional<std::int64_t> integral(const boost::json::value& v) {
  if (auto i = json_integer(v)) return i;
  if (const auto* d = v.if_double()) {
    if (std::isfinite(*d) && std::trunc(*d) == *d && std::fabs(*d) <= max_exact_integer) {
      return static_cast<std::int64_t>(*d);
    }
  }
  return std::nullopt;
}

class manifest final : public layout {
 public:
  std::string_view name() const override { return "manifest"; }
  int specificity() const override { return manifest_specificity; }
  // Claimed only through the marker, never by name.
  bool claims_name(std::string_view, bool) const override { return false; }
  std::string_view marker_file() const override { return manifest_file; }

  recognition recognise(const candidate_view& c) const override {
    recognition r;
    if (!c.is_dir()) {
      r.problem = "a manifest checkpoint is a folder";
      return r;
    }
    const auto* file = find_file(c, manifest_file);
    if (!file || file->is_dir) return r;  // gone again: nothing to report
    const std::string what(manifest_file);

    const auto text = read_small_file(c, *file, max_manifest_bytes, r.problem);
    if (!text) return r;
    json_arena arena;
    boost::system::error_code ec;
    const auto root = parse_python_json(*text, ec, arena.storage());
    if (ec) {
      r.problem =
          what + ": not valid JSON (" + ec.message() + "); truncated or still being written";
      return r;
    }
    const auto* obj = root.if_object();
    if (!obj) {
      r.problem = what + ": not a JSON object";
      return r;
    }

    if (const auto* v = obj->if_contains("identifier")) {
      const auto* s = v->if_string();
      if (!s) {
        r.problem = what + ": identifier is not a string";
        return r;
      }
      if (s->size() > max_identifier_bytes) {
        r.problem =
            what + ": identifier is longer than " + std::to_string(max_identifier_bytes) + " bytes";
        return r;
      }
      r.identifier = std::string(*s);
    }
    if (const auto* v = obj->if_contains("epoch")) {
      const auto epoch = integral(*v);
      if (!epoch || *epoch < 0) {
        r.problem = what + ": epoch is not an integer >= 0";
        return r;
      }
      r.epoch = *epoch;
    }
    if (const auto* v = obj->if_contains("step")) {
      const auto step = integral(*v);
      if (!step || *step < 0) {
        r.problem = what + ": step is not an integer >= 0";
        return r;
      }
      r.step = *step;
    }
    std::string metrics_note;
    if (const auto* v = obj->if_contains("training_metrics")) {
      if (!read_metrics(*v, r.epoch, r.metrics, r.problem, metrics_note)) return r;
    }

    r.verdict = state::complete;
    r.problem = std::move(metrics_note);
    r.completed_at_ns = file->mtime_ns;
    r.fingerprint = "manifest:" + std::to_string(file->size) + ":" + std::to_string(file->mtime_ns);
    return r;
  }

 private:
  // False (with `problem`) when the object is malformed. Non-finite values
  // are well-formed but leave `metrics` empty, with `note` saying why.
  static bool read_metrics(const boost::json::value& v, std::int64_t epoch,
                           std::optional<store::training_metrics>& metrics, std::string& problem,
                           std::string& note) {
    const std::string what = std::string(manifest_file) + ": training_metrics";
    const auto* obj = v.if_object();
    if (!obj) {
      problem = what + " is not an object";
      return false;
    }
    // Present and a number, or present as null (Python's NaN/Infinity).
    const auto field = [&](std::string_view key, bool required, double& out) {
      const auto* value = obj->if_contains(key);
      if (!value) {
        if (required) problem = what + "." + std::string(key) + " is missing";
        return !required;
      }
      if (value->is_null()) {
        out = std::nan("");
        return true;
      }
      const auto number = json_number(*value);
      if (!number) {
        problem = what + "." + std::string(key) + " is not a number";
        return false;
      }
      out = *number;
      return true;
    };
    double train_loss = 0;
    double validation_loss = 0;
    double perplexity = std::nan("");
    if (!field("train_loss", true, train_loss) ||
        !field("validation_loss", true, validation_loss)) {
      return false;
    }
    const bool has_perplexity = obj->contains("perplexity");
    if (!field("perplexity", false, perplexity)) return false;
    if (!has_perplexity) perplexity = std::exp(validation_loss);
    if (!std::isfinite(train_loss) || !std::isfinite(validation_loss) ||
        !std::isfinite(perplexity)) {
      note = what + " are not all finite, so no metrics";
      return true;
    }
    metrics = store::training_metrics{epoch, train_loss, validation_loss, perplexity};
    return true;
  }
};

}  // namespace

const layout& manifest_layout() {
  static const manifest instance;
  return instance;
}

}  // namespace ckptd::watcher
