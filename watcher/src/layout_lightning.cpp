// PyTorch Lightning ModelCheckpoint:
//
//   <default_root_dir>/lightning_logs/version_3/
//     hparams.yaml  metrics.csv           CSVLogger
//     checkpoints/
//       epoch=4-step=1250.ckpt            default template "{epoch}-{step}"
//       epoch=2-step=750-val_loss=0.41.ckpt
//       epoch=4-step=1250-v1.ckpt         version counter on a name collision
//       last.ckpt                         save_last=True; rewritten at every save
//       epoch=5-step=1500.ckpt/           DeepSpeed strategy: latest + checkpoint/ (a tag)
//                                         FSDP sharded: DCP files, then meta.pt
//
// A .ckpt FILE is a torch.save ZIP archive: complete when its end record is
// in place. Lightning >= 2.4 writes it in $TMPDIR and moves it into place
// (a rename on the same filesystem, else a copy that grows under the final
// name); older releases wrote it directly. Either way the engine judges it
// on IN_CLOSE_WRITE / IN_MOVED_TO, and the ZIP check rejects a partial copy.
// last.ckpt rewritten in place has a new size and mtime: a new fingerprint,
// so a fresh created_at. save_last="link" makes last.ckpt a symlink, which
// is never followed (the file it names is reported on its own).
// A .ckpt FOLDER is complete when its DeepSpeed "latest" names a tag folder
// whose *model_states.pt pass the ZIP check, or when FSDP's meta.pt (written
// by rank 0 after every shard) passes it.
//
// epoch = E and step = S from "epoch=E" / "step=S" in the name (0 and -1
// when absent). Metrics, by role_of_metric: "key=value" fields of the name
// first ("val_loss" -> validation loss, "train_loss"/"loss" -> training
// loss), then CSVLogger's metrics.csv when it sits beside the checkpoints'
// folder (its parent, as in version_N/): the last values logged at or before
// step S ("<name>_epoch" and "<name>_step" columns of on_epoch/on_step
// logging count too, in that order). It is read when the checkpoint is
// judged; CSVLogger flushes every 100 steps, so values logged later are
// picked up at the next judgement (a rewrite, a rescan or a restart).
// A metric named with a '/' ("val/loss") makes Lightning create a sub-folder
// instead of a field; such names are not parsed.
// last.ckpt carries no epoch in its name, and the pickle is not read: its
// epoch is the highest epoch in metrics.csv (the CSV lags training by up to
// a flush interval, so it may be one behind), or 0 without a CSV; its step
// stays unknown and it gets no CSV metrics.

#include "formats.hpp"
#include "layouts.hpp"

#include <algorithm>
#include <array>
#include <cmath>

namespace ckptd::watcher {

namespace {

constexpr std::string_view suffix = ".ckpt";
constexpr std::string_view deepspeed_latest = "latest";
constexpr std::string_view fsdp_meta = "meta.pt";
constexpr std::string_view csv_file = "metrics.csv";
constexpr std::uint64_t max_latest_bytes = 4096;
// CSVLogger files of long runs logging every step reach tens of MB; beyond
// this only the header and the newest rows are read.
constexpr std::uint64_t max_csv_bytes = 16ull << 20;
constexpr std::uint64_t max_csv_header_bytes = 64ull << 10;

// What the name says.
struct name_info {
  std::optional<std::int64_t> epoch;
  std::optional<std::int64_t> step;
  std::array<std::optional<double>, 3> metrics;  // by metric_role - 1
  bool last = false;
};

// "-v<k>" at the end: Lightning's counter for a name that already exists.
std::string_view strip_version(std::string_view stem) {
  const auto dash = stem.rfind("-v");
  if (dash == std::string_view::npos) return stem;
  if (!parse_decimal(stem.substr(dash + 2), /*allow_padding=*/false)) return stem;
  return stem.substr(0, dash);
}

std::optional<std::int64_t> integral(std::string_view text) {
  if (auto n = parse_decimal(text, /*allow_padding=*/true)) return n;
  const auto x = parse_float(text);  // "3.0"
  if (!x || !(*x >= 0) || *x >= 1e15 || std::trunc(*x) != *x) return std::nullopt;
  return static_cast<std::int64_t>(*x);
}

name_info parse_name(std::string_view name) {
  name_info info;
  auto stem = strip_version(name.substr(0, name.size() - suffix.size()));
  info.last = stem == "last" || stem.starts_with("last-");
  for (const auto& field : name_fields(stem)) {
    if (field.key == "epoch") {
      info.epoch = integral(field.value);
    } else if (field.key == "step") {
      info.step = integral(field.value);
    } else if (const auto role = role_of_metric(field.key); role != metric_role::none) {
      if (const auto value = parse_float(field.value)) {
        info.metrics[static_cast<std::size_t>(role) - 1] = *value;
      }
    }
  }
  return info;
}

// One CSV line split into fields; double quotes as Python's csv module
// writes them. Lines never contain newlines here (numbers and names).
std::vector<std::string> csv_fields(std::string_view line) {
  std::vector<std::string> out;
  std::string field;
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char ch = line[i];
    if (quoted) {
      if (ch == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        field.push_back('"');
        ++i;
      } else if (ch == '"') {
        quoted = false;
      } else {
        field.push_back(ch);
      }
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      out.push_back(std::move(field));
      field.clear();
    } else if (ch != '\r') {
      field.push_back(ch);
    }
  }
  out.push_back(std::move(field));
  return out;
}

// What a metrics.csv column holds: a role, and how good a source of it
// (0: "val_loss" itself, 1: "val_loss_epoch", 2: "val_loss_step").
struct column_role {
  metric_role role = metric_role::none;
  int rank = 0;
};

column_role role_of_column(std::string_view name) {
  if (auto role = role_of_metric(name); role != metric_role::none) return {role, 0};
  for (const auto& [tail, rank] :
       {std::pair{std::string_view("_epoch"), 1}, std::pair{std::string_view("_step"), 2}}) {
    if (name.size() > tail.size() && name.ends_with(tail)) {
      const auto role = role_of_metric(name.substr(0, name.size() - tail.size()));
      if (role != metric_role::none) return {role, rank};
    }
  }
  return {};
}

struct csv_result {
  std::array<std::optional<double>, 3> metrics;
  std::optional<std::int64_t> max_epoch;
};

// Reads metrics.csv beside the checkpoints folder; nullopt without one.
std::optional<std::string> read_csv(const candidate_view& c) {
  const auto listing = c.list_beside(1, "");
  const auto it = std::find_if(listing.begin(), listing.end(),
                               [](const file_info& f) { return !f.is_dir && f.rel == csv_file; });
  if (it == listing.end()) return std::nullopt;
  if (it->size <= max_csv_bytes) return c.read_beside(1, csv_file, 0, max_csv_bytes);
  // Too long: the header line, then the newest rows from a whole line on.
  auto head = c.read_beside(1, csv_file, 0, max_csv_header_bytes);
  auto tail = c.read_beside(1, csv_file, it->size - max_csv_bytes, max_csv_bytes);
  if (!head || !tail) return std::nullopt;
  const auto head_end = head->find('\n');
  const auto tail_start = tail->find('\n');
  if (head_end == std::string::npos || tail_start == std::string::npos) return std::nullopt;
  return head->substr(0, head_end + 1) + tail->substr(tail_start + 1);
}

csv_result parse_csv(std::string_view text, std::optional<std::int64_t> step) {
  csv_result out;
  const auto header_end = text.find('\n');
  if (header_end == std::string_view::npos) return out;
  const auto header = csv_fields(text.substr(0, header_end));
  std::optional<std::size_t> step_column;
  std::optional<std::size_t> epoch_column;
  std::vector<column_role> roles(header.size());
  for (std::size_t i = 0; i < header.size(); ++i) {
    if (header[i] == "step") step_column = i;
    if (header[i] == "epoch") epoch_column = i;
    roles[i] = role_of_column(header[i]);
  }
  if (!step_column) return out;  // not CSVLogger's

  std::size_t start = header_end + 1;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    if (end == std::string_view::npos) break;  // a row still being written
    const auto row = csv_fields(text.substr(start, end - start));
    start = end + 1;
    if (row.size() != header.size()) continue;  // a file rewritten under us
    const auto row_step = integral(row[*step_column]);
    if (!row_step) continue;
    if (epoch_column) {
      if (const auto e = integral(row[*epoch_column])) {
        out.max_epoch = std::max(out.max_epoch.value_or(0), *e);
      }
    }
    if (!step || *row_step > *step) continue;
    std::array<int, 3> best_rank = {3, 3, 3};
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (roles[i].role == metric_role::none || row[i].empty()) continue;
      const auto slot = static_cast<std::size_t>(roles[i].role) - 1;
      if (roles[i].rank >= best_rank[slot]) continue;
      if (const auto value = parse_float(row[i])) {
        best_rank[slot] = roles[i].rank;
        out.metrics[slot] = *value;
      }
    }
  }
  return out;
}

bool is_model_states(std::string_view rel, std::string_view tag) {
  return rel.size() > tag.size() + 1 && rel.starts_with(tag) && rel[tag.size()] == '/' &&
         rel.find('/', tag.size() + 1) == std::string_view::npos &&
         rel.ends_with("model_states.pt");
}

class lightning final : public layout {
 public:
  std::string_view name() const override { return "lightning"; }
  int specificity() const override { return lightning_specificity; }
  bool reads_beside() const override { return true; }

  bool claims_name(std::string_view name, bool is_dir) const override {
    (void)is_dir;
    return name.size() > suffix.size() && name.ends_with(suffix);
  }

  recognition recognise(const candidate_view& c) const override {
    recognition r;
    if (!claims_name(c.name(), c.is_dir())) {
      r.problem = "not a *.ckpt file or folder";
      return r;
    }
    if (c.is_dir() ? !judge_folder(c, r) : !judge_file(c, r)) return r;
    r.verdict = state::complete;

    const auto info = parse_name(c.name());
    r.epoch = info.epoch.value_or(0);
    r.step = info.step.value_or(-1);
    auto metrics = info.metrics;
    if (const auto text = read_csv(c)) {
      const auto csv = parse_csv(*text, info.step);
      if (!info.epoch && info.last && csv.max_epoch) r.epoch = *csv.max_epoch;
      for (std::size_t i = 0; i < metrics.size(); ++i) {
        if (!metrics[i]) metrics[i] = csv.metrics[i];
      }
    }
    std::string note;
    r.metrics = metrics_if_known(r.epoch, metrics[0], metrics[1], metrics[2], note);
    if (!r.metrics && metrics[0] && metrics[1]) r.problem = std::move(note);
    return r;
  }

 private:
  static bool judge_file(const candidate_view& c, recognition& r) {
    const auto* found = find_file(c, "");
    if (!found) return false;  // gone since it was listed
    const auto& self = *found;
    if (auto p = zip_problem(c, self); !p.empty()) {
      r.problem = std::move(p);
      return false;
    }
    r.completed_at_ns = self.mtime_ns;
    r.fingerprint = "lightning:" + std::to_string(self.size) + ":" + std::to_string(self.mtime_ns);
    return true;
  }

  static bool judge_folder(const candidate_view& c, recognition& r) {
    fingerprint_hash hash;
    if (const auto* meta = find_file(c, fsdp_meta); meta && !meta->is_dir) {
      if (auto p = zip_problem(c, *meta); !p.empty()) {
        r.problem = std::move(p);
        return false;
      }
      hash.add(*meta);
      r.completed_at_ns = meta->mtime_ns;
      r.fingerprint = "lightning-fsdp:" + hash.hex();
      return true;
    }
    const auto* latest = find_file(c, deepspeed_latest);
    if (!latest || latest->is_dir) return false;  // still saving: nothing is wrong yet
    std::string problem;
    const auto text = read_small_file(c, *latest, max_latest_bytes, problem);
    if (!text) {
      r.problem = std::move(problem);
      return false;
    }
    const auto tag = trim_ascii(*text);
    const auto* tag_dir = tag.empty() ? nullptr : find_file(c, tag);
    if (!tag_dir || !tag_dir->is_dir || tag.find('/') != std::string_view::npos) {
      if (!tag.empty())
        r.problem = "latest names \"" + std::string(tag.substr(0, 64)) +
                    "\", which is not a tag folder here";
      return false;
    }
    hash.add(*latest);
    std::size_t states = 0;
    r.completed_at_ns = latest->mtime_ns;
    for (const auto& f : c.files()) {
      if (f.is_dir || !is_model_states(f.rel, tag)) continue;
      if (auto p = zip_problem(c, f); !p.empty()) {
        r.problem = std::move(p);
        return false;
      }
      hash.add(f);
      ++states;
      r.completed_at_ns = std::max(r.completed_at_ns, f.mtime_ns);
    }
    if (states == 0) {
      r.problem = "latest names " + std::string(tag) + ", which holds no *model_states.pt";
      return false;
    }
    r.fingerprint = "lightning-deepspeed:" + hash.hex();
    return true;
  }
};

}  // namespace

const layout& lightning_layout() {
  static const lightning instance;
  return instance;
}

}  // namespace ckptd::watcher
