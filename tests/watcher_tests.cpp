// watcher_tests: the pure "is this a finished checkpoint?" logic (layouts,
// format checks, staging names, layout choice), fed by hand-built in-memory
// candidates and by real folders that the fixtures write the way the trainers
// do. No inotify, no clock.

#include "formats.hpp"
#include "layout.hpp"
#include "layouts.hpp"
#include "support/fixtures.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

namespace tt = boost::test_tools;
namespace fs = std::filesystem;
namespace w = ckptd::watcher;
namespace t = ckptd::test;

namespace {

// A candidate built by hand: files with contents, folders, and fake sizes.
class memory_view final : public w::candidate_view {
 public:
  explicit memory_view(std::string name, bool is_dir = true)
      : name_(std::move(name)), is_dir_(is_dir) {}

  memory_view& add(const std::string& rel, std::string bytes, std::int64_t mtime_ns = 1'000) {
    files_.push_back(w::file_info{rel, false, bytes.size(), mtime_ns});
    contents_[rel] = std::move(bytes);
    sort();
    return *this;
  }
  memory_view& add_dir(const std::string& rel, std::int64_t mtime_ns = 1'000) {
    files_.push_back(w::file_info{rel, true, 0, mtime_ns});
    sort();
    return *this;
  }
  // A file whose listed size differs from its readable bytes.
  memory_view& add_sized(const std::string& rel, std::uint64_t size, std::string bytes = {}) {
    files_.push_back(w::file_info{rel, false, size, 1'000});
    contents_[rel] = std::move(bytes);
    sort();
    return *this;
  }
  memory_view& remove(const std::string& rel) {
    files_.erase(std::remove_if(files_.begin(), files_.end(),
                                [&](const w::file_info& f) { return f.rel == rel; }),
                 files_.end());
    contents_.erase(rel);
    return *this;
  }
  // Bytes read so far, to check that checks read only what they need.
  std::uint64_t bytes_read() const { return bytes_read_; }

  std::string_view name() const override { return name_; }
  bool is_dir() const override { return is_dir_; }
  const std::vector<w::file_info>& files() const override { return files_; }
  std::optional<std::string> read(std::string_view rel, std::uint64_t offset,
                                  std::uint64_t length) const override {
    const auto it = contents_.find(std::string(rel));
    if (it == contents_.end()) return std::nullopt;
    if (offset >= it->second.size()) return std::string();
    auto out = it->second.substr(offset, length);
    bytes_read_ += out.size();
    return out;
  }
  // Files beside the candidate, in its parent folder.
  memory_view& add_sibling(const std::string& name, std::string bytes) {
    siblings_[name] = std::move(bytes);
    return *this;
  }
  std::optional<std::string> read_sibling(std::string_view name,
                                          std::uint64_t max_bytes) const override {
    const auto it = siblings_.find(std::string(name));
    if (it == siblings_.end() || it->second.size() > max_bytes) return std::nullopt;
    return it->second;
  }
  bool sibling_exists(std::string_view name) const override {
    return siblings_.contains(std::string(name));
  }

 private:
  void sort() {
    std::sort(files_.begin(), files_.end(),
              [](const w::file_info& a, const w::file_info& b) { return a.rel < b.rel; });
  }
  std::string name_;
  bool is_dir_;
  std::vector<w::file_info> files_;
  std::map<std::string, std::string> contents_;
  std::map<std::string, std::string> siblings_;
  mutable std::uint64_t bytes_read_ = 0;
};

const w::layout& hf() { return w::hf_trainer_layout(); }
const w::layout& torchtune() { return w::llama_stack_torchtune_layout(); }
const w::layout& manifest() { return w::manifest_layout(); }

// A minimal trainer_state.json with the given top-level epoch and history.
std::string trainer_state(std::int64_t global_step, const boost::json::value& epoch,
                          boost::json::array history) {
  return t::python_json(boost::json::object{
             {"epoch", epoch}, {"global_step", global_step}, {"log_history", std::move(history)}}) +
         "\n";
}

boost::json::object train_entry(std::int64_t step, double loss) {
  return {{"epoch", 0.1}, {"loss", loss}, {"step", step}, {"learning_rate", 1e-05}};
}
boost::json::object eval_entry(std::int64_t step, double loss) {
  return {{"epoch", 0.1}, {"eval_loss", loss}, {"step", step}, {"eval_runtime", 2.0}};
}

// An HF checkpoint folder with valid weights and the given state text.
memory_view hf_checkpoint(std::int64_t step, std::string state_text) {
  memory_view v("checkpoint-" + std::to_string(step));
  v.add("config.json", "{}");
  v.add("model.safetensors", t::safetensors_bytes());
  v.add("optimizer.pt", t::zip_bytes());
  v.add("trainer_state.json", std::move(state_text), 7'000);
  return v;
}

std::vector<std::string> children_of(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  return names;
}

std::unique_ptr<w::candidate_view> view(const fs::path& path) {
  auto v = w::view_from_disk(path);
  BOOST_TEST_REQUIRE(v.get() != nullptr, "view_from_disk(" << path << ")");
  return v;
}

void check_metrics(const w::recognition& r, const std::optional<t::expected_metrics>& expected) {
  BOOST_TEST_REQUIRE(expected.has_value());
  BOOST_TEST_REQUIRE(r.metrics.has_value(), "no metrics: " << r.problem);
  BOOST_TEST(r.metrics->epoch == expected->epoch);
  BOOST_TEST(r.metrics->train_loss == expected->train_loss, tt::tolerance(1e-12));
  BOOST_TEST(r.metrics->validation_loss == expected->validation_loss, tt::tolerance(1e-12));
  BOOST_TEST(r.metrics->perplexity == expected->perplexity, tt::tolerance(1e-12));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(watcher_tests)

// ---------------------------------------------------------------------------
// Staging names and layout choice

BOOST_AUTO_TEST_CASE(staging_names) {
  for (const std::string_view name :
       {"", ".", "..", "tmp-checkpoint-400", "tmp-checkpoint-a1b2c3", "1000.orbax-checkpoint-tmp",
        "1000.orbax-checkpoint-tmp-1718000000", "state.orbax-checkpoint-tmp-3", ".metadata.tmp",
        ".nfs000000000123abcd00000001", "megatron_gpt--val_loss=1.98-epoch=1-unfinished",
        ".model.safetensors.Xy12Ab", ".git", ".ipynb_checkpoints", "ckptd-checkpoint.json.tmp",
        "model.safetensors.partial", "blob.incomplete"}) {
    BOOST_TEST(w::is_staging_name(name), "should be staging: \"" << name << "\"");
  }
  for (const std::string_view name :
       {"checkpoint-400", "Llama3.2-3B-Instruct-sft-0", ".metadata", "1000", "epoch_0",
        "trainer_state.json", "tmp", "checkpoint-tmp", "unfinished", "my.tmpl"}) {
    BOOST_TEST(!w::is_staging_name(name), "should not be staging: \"" << name << "\"");
  }
}

BOOST_AUTO_TEST_CASE(all_layouts_are_distinct) {
  const auto& layouts = w::all_layouts();
  BOOST_TEST(layouts.size() == 3u);
  for (std::size_t i = 0; i < layouts.size(); ++i) {
    for (std::size_t j = i + 1; j < layouts.size(); ++j) {
      BOOST_TEST(layouts[i]->specificity() != layouts[j]->specificity());
      BOOST_TEST(layouts[i]->name() != layouts[j]->name());
    }
  }
  BOOST_TEST(manifest().marker_file() == w::manifest_file);
  BOOST_TEST(hf().marker_file().empty());
  BOOST_TEST(torchtune().marker_file().empty());
}

BOOST_AUTO_TEST_CASE(choose_layout_by_name) {
  const std::vector<std::string> none;
  BOOST_TEST(w::choose_layout("checkpoint-400", true, none) == &hf());
  BOOST_TEST(w::choose_layout("checkpoint-0", true, none) == &hf());
  BOOST_TEST(w::choose_layout("checkpoint-999999999999999999", true, none) == &hf());
  BOOST_TEST(w::choose_layout("Llama3.2-3B-Instruct-sft-0", true, none) == &torchtune());
  BOOST_TEST(w::choose_layout("Llama-3.1-8B-Instruct-dpo-12", true, none) == &torchtune());
  BOOST_TEST(w::choose_layout("my-model-sft-sft-3", true, none) == &torchtune());
  for (const std::string_view name : {"checkpoint-",
                                      "checkpoint-0400",
                                      "checkpoint--1",
                                      "checkpoint-+1",
                                      "checkpoint-1a",
                                      "checkpoint-1.5",
                                      "checkpoint-1000000000000000000",
                                      "Checkpoint-400",
                                      "checkpoint_400",
                                      "xcheckpoint-400",
                                      "tmp-checkpoint-400",
                                      "-sft-0",
                                      "sft-0",
                                      "model-sft-",
                                      "model-sft-01",
                                      "model-ppo-1",
                                      "model-sft-0x",
                                      "model-sft-1234567890",
                                      "epoch_0",
                                      "merged_model",
                                      "1000"}) {
    BOOST_TEST(w::choose_layout(name, true, none) == nullptr, "claimed: \"" << name << "\"");
  }
  // Files are never these layouts' candidates.
  BOOST_TEST(w::choose_layout("checkpoint-400", false, none) == nullptr);
  BOOST_TEST(w::choose_layout("Llama3.2-3B-Instruct-sft-0", false, none) == nullptr);
}

BOOST_AUTO_TEST_CASE(choose_layout_manifest_beats_names) {
  const std::vector<std::string> with_manifest = {"model.safetensors", "ckptd-checkpoint.json"};
  BOOST_TEST(w::choose_layout("checkpoint-400", true, with_manifest) == &manifest());
  BOOST_TEST(w::choose_layout("Llama3.2-3B-Instruct-sft-0", true, with_manifest) == &manifest());
  BOOST_TEST(w::choose_layout("anything at all", true, with_manifest) == &manifest());
  // Staging names lose even with a manifest, and a file cannot hold one.
  BOOST_TEST(w::choose_layout("tmp-checkpoint-400", true, with_manifest) == nullptr);
  BOOST_TEST(w::choose_layout(".hidden", true, with_manifest) == nullptr);
  BOOST_TEST(w::choose_layout("anything", false, with_manifest) == nullptr);
  // Only the exact name counts.
  BOOST_TEST(w::choose_layout("anything", true, {"ckptd-checkpoint.json.tmp"}) == nullptr);
  BOOST_TEST(w::choose_layout("checkpoint-5", true, {"ckptd-checkpoint.json.tmp"}) == &hf());
}

// ---------------------------------------------------------------------------
// Format checks

BOOST_AUTO_TEST_CASE(safetensors_size_rule) {
  const std::string good = t::safetensors_bytes(3, 5);
  {
    memory_view v("c");
    v.add("model.safetensors", good);
    BOOST_TEST(w::safetensors_problem(v, *w::find_file(v, "model.safetensors")).empty());
    // Only the header is read, never the tensor data.
    BOOST_TEST(v.bytes_read() < good.size());
  }
  for (std::size_t cut = 0; cut < good.size(); ++cut) {
    memory_view v("c");
    v.add("model.safetensors", good.substr(0, cut));
    BOOST_TEST(!w::safetensors_problem(v, *w::find_file(v, "model.safetensors")).empty(),
               "truncated to " << cut << " bytes passes");
  }
  memory_view longer("c");
  longer.add("model.safetensors", good + "x");
  BOOST_TEST(!w::safetensors_problem(longer, longer.files()[0]).empty());

  // An absurd header length is refused without reading it.
  std::string absurd = good;
  absurd.replace(0, 8, std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8));
  memory_view huge("c");
  huge.add("model.safetensors", absurd);
  BOOST_TEST(w::safetensors_problem(huge, huge.files()[0]).find("implausible") !=
             std::string::npos);
  BOOST_TEST(huge.bytes_read() <= 8u);

  const auto with_header = [](const std::string& json, std::size_t data_bytes) {
    std::string out;
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((json.size() >> (8 * i)) & 0xFF));
    return out + json + std::string(data_bytes, '\0');
  };
  const auto problem_of = [](std::string bytes) {
    memory_view v("c");
    v.add("x.safetensors", std::move(bytes));
    return w::safetensors_problem(v, v.files()[0]);
  };
  BOOST_TEST(problem_of(with_header(R"({"__metadata__":{"a":"b"}})", 0)).empty());
  BOOST_TEST(problem_of(with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8))
                 .empty());
  BOOST_TEST(
      !problem_of(with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 7))
           .empty());
  BOOST_TEST(!problem_of(with_header(R"({"t":{"data_offsets":[8,0]}})", 8)).empty());
  BOOST_TEST(!problem_of(with_header(R"({"t":{"data_offsets":[0]}})", 8)).empty());
  BOOST_TEST(!problem_of(with_header(R"({"t":{"data_offsets":"0-8"}})", 8)).empty());
  BOOST_TEST(!problem_of(with_header(R"({"t":{"data_offsets":[-1,8]}})", 9)).empty());
  BOOST_TEST(!problem_of(with_header(R"([1,2])", 0)).empty());
  BOOST_TEST(!problem_of(with_header(R"({"t":)", 0)).empty());
}

BOOST_AUTO_TEST_CASE(zip_end_record) {
  for (const bool zip64 : {true, false}) {
    const std::string good = t::zip_bytes(100, zip64);
    {
      memory_view v("c");
      v.add("optimizer.pt", good);
      BOOST_TEST(w::zip_problem(v, v.files()[0]).empty(), "zip64=" << zip64);
    }
    for (std::size_t cut = 0; cut < good.size(); ++cut) {
      memory_view v("c");
      v.add("optimizer.pt", good.substr(0, cut));
      BOOST_TEST(!w::zip_problem(v, v.files()[0]).empty(),
                 "zip64=" << zip64 << " truncated to " << cut << " bytes passes");
    }
    memory_view appended("c");
    appended.add("optimizer.pt", good + std::string(10, '\0'));
    BOOST_TEST(!w::zip_problem(appended, appended.files()[0]).empty());
  }
  // A ZIP comment after the end record is legal.
  std::string commented = t::zip_bytes(10, false);
  commented[commented.size() - 2] = 5;
  commented += "hello";
  memory_view with_comment("c");
  with_comment.add("a.pth", commented);
  BOOST_TEST(w::zip_problem(with_comment, with_comment.files()[0]).empty());

  // Only the tail is read, however large the file.
  memory_view big("c");
  big.add("big.pt", std::string(1 << 20, 'x') + t::zip_bytes(10, false));
  BOOST_TEST(!w::zip_problem(big, big.files()[0]).empty());  // directory offsets disagree
  BOOST_TEST(big.bytes_read() <= w::zip_tail_bytes);

  // A stray end signature inside the data does not count.
  memory_view stray("c");
  stray.add("x.pt", std::string("PK\x05\x06", 4) + std::string(100, '\0'));
  BOOST_TEST(!w::zip_problem(stray, stray.files()[0]).empty());
}

BOOST_AUTO_TEST_CASE(sharded_index) {
  const std::string index = R"({"metadata": {"total_size": 64},
    "weight_map": {"a": "model-00001-of-00002.safetensors",
                   "b": "model-00002-of-00002.safetensors",
                   "c": "model-00002-of-00002.safetensors"}})";
  memory_view v("c");
  v.add("model-00001-of-00002.safetensors", t::safetensors_bytes());
  v.add("model-00002-of-00002.safetensors", t::safetensors_bytes());
  v.add("model.safetensors.index.json", index);
  BOOST_TEST(w::index_problem(v, *w::find_file(v, "model.safetensors.index.json")).empty());
  BOOST_TEST(w::weight_set_problem(v, {&v.files()[0], &v.files()[1], &v.files()[2]}).empty());

  memory_view missing("c");
  missing.add("model-00001-of-00002.safetensors", t::safetensors_bytes());
  missing.add("model.safetensors.index.json", index);
  BOOST_TEST(w::index_problem(missing, *w::find_file(missing, "model.safetensors.index.json"))
                 .find("model-00002-of-00002.safetensors") != std::string::npos);

  memory_view truncated_shard("c");
  truncated_shard.add("model-00001-of-00002.safetensors", t::safetensors_bytes());
  const std::string shard = t::safetensors_bytes();
  truncated_shard.add("model-00002-of-00002.safetensors", shard.substr(0, shard.size() - 1));
  truncated_shard.add("model.safetensors.index.json", index);
  BOOST_TEST(!w::index_problem(truncated_shard,
                               *w::find_file(truncated_shard, "model.safetensors.index.json"))
                  .empty());

  // Shards written, index not yet.
  memory_view no_index("c");
  no_index.add("model-00001-of-00002.safetensors", t::safetensors_bytes());
  no_index.add("model-00002-of-00002.safetensors", t::safetensors_bytes());
  BOOST_TEST(
      !w::weight_set_problem(no_index, {&no_index.files()[0], &no_index.files()[1]}).empty());

  for (const std::string bad :
       {R"({"weight_map": {}})", R"({"weight_map": {"a": 1}})", R"({"weight_map": []})",
        R"({"metadata": {}})", R"({"weight_map": {"a": "../model.safetensors"}})",
        R"({"weight_map": {"a": "/etc/passwd"}})",
        R"({"weight_map": {"a": "model.safetensors.index.json"}})", R"({"weight_map": {"a": )"}) {
    memory_view b("c");
    b.add("model.safetensors", t::safetensors_bytes());
    b.add("model.safetensors.index.json", bad);
    BOOST_TEST(!w::index_problem(b, *w::find_file(b, "model.safetensors.index.json")).empty(),
               "accepted: " << bad);
  }
  BOOST_TEST(w::weight_set_problem(v, {}) == "no weight files");
}

BOOST_AUTO_TEST_CASE(python_json_literals) {
  boost::system::error_code ec;
  auto v =
      w::parse_python_json(R"({"a": NaN, "b": [Infinity, -Infinity], "c": "NaN Infinity"})", ec);
  BOOST_TEST_REQUIRE(!ec);
  BOOST_TEST(v.at("a").is_null());
  BOOST_TEST(v.at("b").at(0).is_null());
  BOOST_TEST(v.at("b").at(1).is_null());
  BOOST_TEST(v.at("c").as_string() == "NaN Infinity");
  v = w::parse_python_json(R"({"s": "a\"NaN", "x": 1})", ec);
  BOOST_TEST_REQUIRE(!ec);
  BOOST_TEST(v.at("s").as_string() == "a\"NaN");
  w::parse_python_json(R"({"a": Nan})", ec);
  BOOST_TEST(ec.failed());
  w::parse_python_json(R"({"a": 1)", ec);
  BOOST_TEST(ec.failed());
}

BOOST_AUTO_TEST_CASE(fixture_python_float) {
  BOOST_TEST(t::python_float(1.0) == "1.0");
  BOOST_TEST(t::python_float(0.0) == "0.0");
  BOOST_TEST(t::python_float(-2.5) == "-2.5");
  BOOST_TEST(t::python_float(1.874) == "1.874");
  BOOST_TEST(t::python_float(0.0001) == "0.0001");
  BOOST_TEST(t::python_float(1e-05) == "1e-05");
  BOOST_TEST(t::python_float(3.4e-05) == "3.4e-05");
  BOOST_TEST(t::python_float(1.2e15) == "1200000000000000.0");
  BOOST_TEST(t::python_float(1e16) == "1e+16");
  BOOST_TEST(t::python_float(0.1 + 0.2) == "0.30000000000000004");
  BOOST_TEST(t::python_float(std::nan("")) == "NaN");
  BOOST_TEST(t::python_float(-std::numeric_limits<double>::infinity()) == "-Infinity");
}

// ---------------------------------------------------------------------------
// Hugging Face Trainer

BOOST_AUTO_TEST_CASE(hf_complete_with_metrics) {
  const auto state = trainer_state(
      400, 2.0,
      {train_entry(100, 2.5), eval_entry(200, 2.4), train_entry(200, 2.25), train_entry(300, 2.0),
       eval_entry(400, 1.9), train_entry(400, 1.75), train_entry(500, 9.0), eval_entry(500, 9.0)});
  const auto v = hf_checkpoint(400, state);
  const auto r = hf().recognise(v);
  BOOST_TEST_REQUIRE(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete),
                     r.problem);
  BOOST_TEST(r.problem.empty());
  BOOST_TEST(r.identifier.empty());
  BOOST_TEST(r.step == 400);
  BOOST_TEST(r.epoch == 2);
  BOOST_TEST(r.completed_at_ns == 7'000);
  BOOST_TEST(r.fingerprint == "hf:" + std::to_string(state.size()) + ":7000");
  BOOST_TEST_REQUIRE(r.metrics.has_value());
  BOOST_TEST(r.metrics->epoch == 2);
  BOOST_TEST(r.metrics->train_loss == 1.75);
  BOOST_TEST(r.metrics->validation_loss == 1.9);
  BOOST_TEST(r.metrics->perplexity == std::exp(1.9), tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(hf_losses_at_or_before_the_step) {
  // Evaluation every 300 steps, logging every 100: checkpoint-500 takes the
  // loss of step 500 and the eval of step 300.
  const auto state = trainer_state(
      500, 1.25,
      {train_entry(100, 3.0), train_entry(300, 2.0), eval_entry(300, 2.5), train_entry(500, 1.5)});
  const auto r = hf().recognise(hf_checkpoint(500, state));
  BOOST_TEST_REQUIRE(r.metrics.has_value(), r.problem);
  BOOST_TEST(r.metrics->train_loss == 1.5);
  BOOST_TEST(r.metrics->validation_loss == 2.5);
  BOOST_TEST(r.epoch == 1);
}

BOOST_AUTO_TEST_CASE(hf_in_progress_is_quietly_incomplete) {
  auto v = hf_checkpoint(400, trainer_state(400, 1.0, {}));
  v.remove("trainer_state.json");
  auto r = hf().recognise(v);
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(r.problem.empty());
  BOOST_TEST(r.step == 400);

  v.add_dir("trainer_state.json");
  r = hf().recognise(v);
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
}

BOOST_AUTO_TEST_CASE(hf_truncated_state_at_every_length) {
  t::hf_run run("/nonexistent-never-written", {.steps_per_epoch = 50, .logging_steps = 10});
  const std::string text = run.trainer_state_json(150);
  BOOST_TEST(text.back() == '\n');
  // Every strict prefix is incomplete, except the one missing only the
  // trailing newline, which is the whole JSON document.
  for (std::size_t cut = 0; cut + 1 < text.size(); ++cut) {
    const auto r = hf().recognise(hf_checkpoint(150, text.substr(0, cut)));
    BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete),
               "complete when cut to " << cut << " bytes");
    BOOST_TEST(!r.problem.empty(), "no problem at " << cut);
  }
  const auto r = hf().recognise(hf_checkpoint(150, text));
  BOOST_TEST_REQUIRE(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete),
                     r.problem);
  check_metrics(r, run.expected_metrics_at(150));
  BOOST_TEST(r.epoch == 3);
}

BOOST_AUTO_TEST_CASE(hf_global_step_must_match) {
  auto r = hf().recognise(hf_checkpoint(400, trainer_state(800, 1.0, {})));
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(r.problem.find("global_step 800") != std::string::npos);

  for (const std::string bad :
       {R"({"epoch": 1.0, "log_history": []})", R"({"epoch": 1.0, "global_step": "400"})",
        R"({"epoch": 1.0, "global_step": 400.0})", R"({"epoch": 1.0, "global_step": null})",
        R"({"epoch": 1.0, "global_step": 400.5})", R"({"epoch": 1.0, "global_step": -400})",
        R"({"epoch": "1.0", "global_step": 400})", R"([{"global_step": 400}])", "400", "",
        "\xef\xbb\xbf{}", R"({"global_step": 400,})", R"({"global_step": 400} trailing)"}) {
    const auto rb = hf().recognise(hf_checkpoint(400, bad));
    BOOST_TEST(static_cast<int>(rb.verdict) == static_cast<int>(w::state::incomplete),
               "accepted: " << bad);
    BOOST_TEST(!rb.problem.empty(), "no problem for: " << bad);
  }
}

BOOST_AUTO_TEST_CASE(hf_epoch_rounding) {
  const std::vector<std::pair<boost::json::value, std::int64_t>> cases = {
      {2.9999999, 3},
      {2.9999999999999996, 3},
      {3.0, 3},
      {3.0000001, 3},
      {0.99, 0},
      {0.5, 0},
      {1e-7, 0},
      {0.0, 0},
      {-1.0, 0},
      {-0.0000001, 0},
      {7, 7},
      {nullptr, 0},
      {1e300, 1'000'000'000'000}};
  for (const auto& [epoch, whole] : cases) {
    const auto state = trainer_state(10, epoch, {train_entry(10, 1.0), eval_entry(10, 1.0)});
    const auto r = hf().recognise(hf_checkpoint(10, state));
    BOOST_TEST_REQUIRE(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete),
                       r.problem);
    BOOST_TEST(r.epoch == whole, "epoch " << epoch);
    BOOST_TEST_REQUIRE(r.metrics.has_value());
    BOOST_TEST(r.metrics->epoch == whole);
  }
  // Python writes NaN for a NaN epoch: still complete, epoch 0.
  const auto r = hf().recognise(hf_checkpoint(10, R"({"epoch": NaN, "global_step": 10})"));
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete));
  BOOST_TEST(r.epoch == 0);
}

BOOST_AUTO_TEST_CASE(hf_no_metrics_without_both_finite_losses) {
  const auto nan = std::nan("");
  const std::vector<std::pair<std::string, boost::json::array>> cases = {
      {"no eval", {train_entry(10, 1.0), train_entry(20, 0.9)}},
      {"no train", {eval_entry(20, 1.0)}},
      {"only later eval", {train_entry(20, 1.0), eval_entry(30, 1.0)}},
      {"NaN loss", {train_entry(10, 1.0), train_entry(20, nan), eval_entry(20, 1.0)}},
      {"NaN eval", {train_entry(20, 1.0), eval_entry(20, nan)}},
      {"inf eval", {train_entry(20, 1.0), eval_entry(20, std::numeric_limits<double>::infinity())}},
      {"perplexity overflows", {train_entry(20, 1.0), eval_entry(20, 800.0)}},
      {"loss not a number",
       {boost::json::object{{"loss", "x"}, {"step", 20}}, eval_entry(20, 1.0)}},
      {"empty", {}},
  };
  for (const auto& [what, history] : cases) {
    const auto state = trainer_state(20, 1.0, history);
    const auto r = hf().recognise(hf_checkpoint(20, state));
    BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete), what);
    BOOST_TEST(!r.metrics.has_value(), what);
    BOOST_TEST(!r.problem.empty(), what);
  }
  // A NaN earlier than the last loss is superseded.
  const auto state = trainer_state(
      20, 1.0,
      {train_entry(10, nan), eval_entry(10, nan), train_entry(20, 0.5), eval_entry(20, 0.75)});
  BOOST_TEST(state.find("NaN") != std::string::npos);
  const auto r = hf().recognise(hf_checkpoint(20, state));
  BOOST_TEST_REQUIRE(r.metrics.has_value(), r.problem);
  BOOST_TEST(r.metrics->train_loss == 0.5);
  // Malformed entries are skipped, not fatal.
  const auto odd = trainer_state(20, 1.0,
                                 {1, "x", boost::json::object{{"loss", 5.0}},
                                  boost::json::object{{"loss", 5.0}, {"step", "20"}},
                                  train_entry(20, 0.5), eval_entry(20, 0.75)});
  const auto ro = hf().recognise(hf_checkpoint(20, odd));
  BOOST_TEST_REQUIRE(ro.metrics.has_value(), ro.problem);
  BOOST_TEST(ro.metrics->train_loss == 0.5);
  // No log_history at all.
  const auto rn = hf().recognise(hf_checkpoint(20, R"({"epoch": 1.0, "global_step": 20})"));
  BOOST_TEST(static_cast<int>(rn.verdict) == static_cast<int>(w::state::complete));
  BOOST_TEST(!rn.metrics.has_value());
}

BOOST_AUTO_TEST_CASE(hf_damaged_weights_or_huge_state) {
  const auto state = trainer_state(10, 1.0, {});
  auto v = hf_checkpoint(10, state);
  const std::string weights = t::safetensors_bytes();
  v.remove("model.safetensors").add("model.safetensors", weights.substr(0, weights.size() - 3));
  auto r = hf().recognise(v);
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(r.problem.find("model.safetensors") != std::string::npos);

  // A trainer_state.json listed as 100 MiB is reported, not read.
  auto big = hf_checkpoint(10, state);
  big.remove("trainer_state.json").add_sized("trainer_state.json", 100ull << 20, state);
  r = hf().recognise(big);
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(r.problem.find("trainer_state.json") != std::string::npos);
  BOOST_TEST(big.bytes_read() == 0u);

  // Optimizer and RNG files are not weights: not checked.
  auto partial_optimizer = hf_checkpoint(10, state);
  partial_optimizer.remove("optimizer.pt").add("optimizer.pt", "PK");
  r = hf().recognise(partial_optimizer);
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete), r.problem);
}

// ---------------------------------------------------------------------------
// llama-stack torchtune

BOOST_AUTO_TEST_CASE(torchtune_settles_once_weights_are_whole) {
  memory_view v("Llama3.2-3B-Instruct-sft-2");
  v.add_dir("log", 100).add("log/log_1717171717.txt", "Step 1 | loss:1.5 \n", 100);
  auto r = torchtune().recognise(v);
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(r.problem.empty());  // an epoch in progress is not a problem

  v.add("params.json", "{}", 200).add("tokenizer.model", "t", 210);
  const std::string consolidated = t::zip_bytes(300);
  v.add("consolidated.00.pth", consolidated.substr(0, 100), 220);
  r = torchtune().recognise(v);
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(r.problem.find("consolidated.00.pth") != std::string::npos);

  v.remove("consolidated.00.pth").add("consolidated.00.pth", consolidated, 300);
  v.add_dir("adapter", 310);
  const std::string adapter = t::zip_bytes(50);
  v.add("adapter/adapter.pth", adapter.substr(0, adapter.size() - 1), 320);
  r = torchtune().recognise(v);
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(r.problem.find("adapter/adapter.pth") != std::string::npos);

  v.remove("adapter/adapter.pth").add("adapter/adapter.pth", adapter, 400);
  r = torchtune().recognise(v);
  BOOST_TEST_REQUIRE(static_cast<int>(r.verdict) == static_cast<int>(w::state::settling),
                     r.problem);
  BOOST_TEST(r.problem.empty());
  BOOST_TEST(r.epoch == 2);
  BOOST_TEST(r.step == -1);
  BOOST_TEST(!r.metrics.has_value());
  BOOST_TEST(r.identifier.empty());
  BOOST_TEST(r.completed_at_ns == 400);
  BOOST_TEST(r.fingerprint.rfind("torchtune:2:", 0) == 0u);

  // The log is closed after the save: neither completed_at nor the
  // fingerprint move.
  const auto before = r;
  v.remove("log/log_1717171717.txt").add("log/log_1717171717.txt", "Step 1 | loss:1.5 \n", 999);
  r = torchtune().recognise(v);
  BOOST_TEST(r.completed_at_ns == before.completed_at_ns);
  BOOST_TEST(r.fingerprint == before.fingerprint);

  // A rewritten weight file changes the fingerprint.
  v.remove("adapter/adapter.pth").add("adapter/adapter.pth", adapter, 500);
  r = torchtune().recognise(v);
  BOOST_TEST(r.fingerprint != before.fingerprint);
  BOOST_TEST(r.completed_at_ns == 500);
}

BOOST_AUTO_TEST_CASE(torchtune_weight_variants) {
  const auto verdict_of = [](memory_view& v) {
    return static_cast<int>(torchtune().recognise(v).verdict);
  };
  const int settling = static_cast<int>(w::state::settling);
  const int incomplete = static_cast<int>(w::state::incomplete);

  memory_view hf_format("Llama3.1-8B-Instruct-dpo-0");
  hf_format.add("adapter_model.pt", t::zip_bytes());
  hf_format.add("adapter/adapter_model.safetensors", t::safetensors_bytes());
  hf_format.add("adapter/adapter_config.json", "{}");
  BOOST_TEST(verdict_of(hf_format) == settling);

  memory_view only_quirk_dir("m-sft-0");
  only_quirk_dir.add_dir("adapter_model").add_dir("log");
  BOOST_TEST(verdict_of(only_quirk_dir) == incomplete);

  memory_view shards("m-sft-1");
  shards.add("model-00001-of-00002.safetensors", t::safetensors_bytes());
  shards.add("model-00002-of-00002.safetensors", t::safetensors_bytes());
  BOOST_TEST(verdict_of(shards) == incomplete);  // the index comes last
  shards.add("model.safetensors.index.json",
             R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                "b": "model-00002-of-00002.safetensors"}})");
  BOOST_TEST(verdict_of(shards) == settling);

  memory_view single("m-sft-3");
  single.add("model.safetensors", t::safetensors_bytes());
  BOOST_TEST(verdict_of(single) == settling);

  // Weights below the first level other than adapter/ are not this layout's.
  memory_view nested("m-sft-4");
  nested.add("sub/consolidated.00.pth", t::zip_bytes());
  BOOST_TEST(verdict_of(nested) == incomplete);

  memory_view wrong_name("checkpoint-5");
  wrong_name.add("consolidated.00.pth", t::zip_bytes());
  BOOST_TEST(verdict_of(wrong_name) == incomplete);
}

// ---------------------------------------------------------------------------
// Manifest

BOOST_AUTO_TEST_CASE(manifest_minimal_and_full) {
  memory_view v("anything");
  v.add("model.safetensors", t::safetensors_bytes());
  v.add("ckptd-checkpoint.json", "{}\n", 5'000);
  auto r = manifest().recognise(v);
  BOOST_TEST_REQUIRE(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete),
                     r.problem);
  BOOST_TEST(r.problem.empty());
  BOOST_TEST(r.identifier.empty());
  BOOST_TEST(r.epoch == 0);
  BOOST_TEST(r.step == -1);
  BOOST_TEST(!r.metrics.has_value());
  BOOST_TEST(r.completed_at_ns == 5'000);
  BOOST_TEST(r.fingerprint == "manifest:3:5000");

  const std::string full = t::manifest_json({.identifier = "my-model-epoch-3",
                                             .epoch = 3,
                                             .step = 1200,
                                             .train_loss = 1.5,
                                             .validation_loss = 1.75});
  v.remove("ckptd-checkpoint.json").add("ckptd-checkpoint.json", full, 6'000);
  r = manifest().recognise(v);
  BOOST_TEST_REQUIRE(r.metrics.has_value(), r.problem);
  BOOST_TEST(r.identifier == "my-model-epoch-3");
  BOOST_TEST(r.epoch == 3);
  BOOST_TEST(r.step == 1200);
  BOOST_TEST(r.metrics->epoch == 3);
  BOOST_TEST(r.metrics->train_loss == 1.5);
  BOOST_TEST(r.metrics->validation_loss == 1.75);
  BOOST_TEST(r.metrics->perplexity == std::exp(1.75), tt::tolerance(1e-12));

  // Given perplexity, integral floats, unknown keys and status.
  v.remove("ckptd-checkpoint.json")
      .add("ckptd-checkpoint.json",
           R"({"epoch": 2.0, "step": 7.0, "status": {"x": 1}, "mine": [1, 2], "identifier": "",
               "training_metrics": {"train_loss": 1, "validation_loss": 2, "perplexity": 3.5, "epoch": "?"}})");
  r = manifest().recognise(v);
  BOOST_TEST_REQUIRE(r.metrics.has_value(), r.problem);
  BOOST_TEST(r.epoch == 2);
  BOOST_TEST(r.step == 7);
  BOOST_TEST(r.identifier.empty());
  BOOST_TEST(r.metrics->perplexity == 3.5);
}

BOOST_AUTO_TEST_CASE(manifest_non_finite_metrics) {
  for (const std::string text :
       {R"({"training_metrics": {"train_loss": NaN, "validation_loss": 1.0}})",
        R"({"training_metrics": {"train_loss": 1.0, "validation_loss": Infinity}})",
        R"({"training_metrics": {"train_loss": 1.0, "validation_loss": 1.0, "perplexity": NaN}})",
        R"({"training_metrics": {"train_loss": 1.0, "validation_loss": 1000.0}})",
        R"({"training_metrics": {"train_loss": null, "validation_loss": 1.0}})"}) {
    memory_view v("x");
    v.add("ckptd-checkpoint.json", text);
    const auto r = manifest().recognise(v);
    BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete), text);
    BOOST_TEST(!r.metrics.has_value(), text);
    BOOST_TEST(!r.problem.empty(), text);
  }
}

BOOST_AUTO_TEST_CASE(manifest_wrong_types_are_incomplete) {
  for (const std::string text :
       {R"({"identifier": 5})",
        R"({"identifier": null})",
        R"({"epoch": "2"})",
        R"({"epoch": -1})",
        R"({"epoch": 1.5})",
        R"({"epoch": null})",
        R"({"epoch": true})",
        R"({"epoch": 1e300})",
        R"({"step": "x"})",
        R"({"step": -5})",
        R"({"training_metrics": []})",
        R"({"training_metrics": {"train_loss": 1.0}})",
        R"({"training_metrics": {"validation_loss": 1.0}})",
        R"({"training_metrics": {"train_loss": "1", "validation_loss": 1.0}})",
        R"({"training_metrics": {"train_loss": 1, "validation_loss": 1, "perplexity": "e"}})",
        R"([])",
        R"("manifest")",
        "",
        "{",
        R"({"epoch": 1,})",
        R"({"epoch": 1} {})"}) {
    memory_view v("x");
    v.add("ckptd-checkpoint.json", text);
    const auto r = manifest().recognise(v);
    BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete),
               "accepted: " << text);
    BOOST_TEST(!r.problem.empty(), "no problem for: " << text);
  }
  const std::string full =
      t::manifest_json({.identifier = "id", .epoch = 1, .train_loss = 1.0, .validation_loss = 2.0});
  for (std::size_t cut = 0; cut + 1 < full.size(); ++cut) {
    memory_view v("x");
    v.add("ckptd-checkpoint.json", full.substr(0, cut));
    BOOST_TEST(
        static_cast<int>(manifest().recognise(v).verdict) == static_cast<int>(w::state::incomplete),
        "complete when cut to " << cut);
  }
  memory_view too_long("x");
  too_long.add("ckptd-checkpoint.json", R"({"identifier": ")" + std::string(2000, 'a') + "\"}");
  BOOST_TEST(static_cast<int>(manifest().recognise(too_long).verdict) ==
             static_cast<int>(w::state::incomplete));
  memory_view gone("x");
  gone.add("model.safetensors", t::safetensors_bytes());
  const auto r = manifest().recognise(gone);
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(r.problem.empty());
}

// ---------------------------------------------------------------------------
// Real folders: view_from_disk over fixture output

BOOST_AUTO_TEST_CASE(disk_hf_run_save_by_save) {
  t::temp_dir tmp;
  t::hf_run run(tmp / "job", {.steps_per_epoch = 40, .save_total_limit = 2, .logging_steps = 10});

  const fs::path first = run.begin_save(40);
  BOOST_TEST(w::choose_layout(first.filename().string(), true, children_of(first)) == &hf());
  auto r = hf().recognise(*view(first));
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(r.problem.empty());

  run.write_truncated_trainer_state(200);
  r = hf().recognise(*view(first));
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(!r.problem.empty());

  BOOST_TEST(run.finish_save().empty());
  const auto v = view(first);
  r = hf().recognise(*v);
  BOOST_TEST_REQUIRE(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete),
                     r.problem);
  BOOST_TEST(r.step == 40);
  BOOST_TEST(r.epoch == 1);
  check_metrics(r, run.expected_metrics_at(40));
  const auto* state = w::find_file(*v, "trainer_state.json");
  BOOST_TEST_REQUIRE(state != nullptr);
  BOOST_TEST(r.completed_at_ns == state->mtime_ns);
  BOOST_TEST(r.completed_at_ns > 0);

  // Rotation with save_total_limit 2: the third save deletes the first.
  run.save(80);
  BOOST_TEST(fs::exists(first));
  run.begin_save(120);
  const auto deleted = run.finish_save();
  BOOST_TEST_REQUIRE(deleted.size() == 1u);
  BOOST_TEST(deleted[0] == first);
  BOOST_TEST(!fs::exists(first));
  BOOST_TEST(w::view_from_disk(first) == nullptr);

  for (const std::int64_t step : {80, 120}) {
    const auto rs = hf().recognise(*view(run.checkpoint_dir(step)));
    BOOST_TEST_REQUIRE(static_cast<int>(rs.verdict) == static_cast<int>(w::state::complete),
                       rs.problem);
    check_metrics(rs, run.expected_metrics_at(step));
  }
  // log_history accumulates: checkpoint-120 holds the evals of 40, 80, 120.
  const auto text = run.trainer_state_json(120);
  BOOST_TEST(boost::json::parse(text).at("log_history").as_array().size() == 12u + 3u);
}

BOOST_AUTO_TEST_CASE(disk_hf_variants) {
  t::temp_dir tmp;
  t::hf_run peft(tmp / "peft", {.steps_per_epoch = 30, .logging_steps = 7, .peft = true});
  auto r = hf().recognise(*view(peft.save(30)));
  BOOST_TEST_REQUIRE(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete),
                     r.problem);
  check_metrics(r, peft.expected_metrics_at(30));
  BOOST_TEST(*peft.expected_train_loss(30) == peft.train_loss_at(28));

  t::hf_run no_eval(tmp / "no-eval", {.with_eval = false});
  r = hf().recognise(*view(no_eval.save(100)));
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete), r.problem);
  BOOST_TEST(!r.metrics.has_value());
  BOOST_TEST(!no_eval.expected_metrics_at(100).has_value());
  BOOST_TEST(r.epoch == 1);

  // A diverged run: Python writes NaN into trainer_state.json.
  t::hf_run diverged(tmp / "nan", {.nan_loss_from_step = 50});
  const auto dir = diverged.save(100);
  std::string text(fs::file_size(dir / "trainer_state.json"), '\0');
  {
    const auto state = w::view_from_disk(dir);
    text = *state->read("trainer_state.json", 0, 1 << 20);
  }
  BOOST_TEST(text.find("\"loss\": NaN") != std::string::npos);
  r = hf().recognise(*view(dir));
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::complete), r.problem);
  BOOST_TEST(!r.metrics.has_value());
  BOOST_TEST(!diverged.expected_metrics_at(100).has_value());

  // A crashed save: everything but trainer_state.json, forever.
  t::hf_run crashed(tmp / "crashed");
  const auto crashed_dir = crashed.begin_save(10);
  r = hf().recognise(*view(crashed_dir));
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  // The weights it wrote are valid.
  const auto v = view(crashed_dir);
  for (const auto& f : v->files()) BOOST_TEST(w::weight_file_problem(*v, f).empty(), f.rel);
}

BOOST_AUTO_TEST_CASE(disk_torchtune_epochs) {
  t::temp_dir tmp;
  t::torchtune_run run(tmp / "job");
  const std::string model = "Llama3.2-3B-Instruct";
  const auto dir0 = run.begin_epoch(model, 0);
  BOOST_TEST(dir0.filename() == "Llama3.2-3B-Instruct-sft-0");
  BOOST_TEST(fs::exists(run.log_file()));
  BOOST_TEST(run.log_file().parent_path() == dir0 / "log");
  BOOST_TEST(w::choose_layout(dir0.filename().string(), true, children_of(dir0)) == &torchtune());
  auto r = torchtune().recognise(*view(dir0));
  BOOST_TEST(static_cast<int>(r.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(r.problem.empty());

  run.finish_epoch();
  r = torchtune().recognise(*view(dir0));
  BOOST_TEST_REQUIRE(static_cast<int>(r.verdict) == static_cast<int>(w::state::settling),
                     r.problem);
  BOOST_TEST(r.epoch == 0);
  BOOST_TEST(!r.metrics.has_value());
  const auto v = view(dir0);
  BOOST_TEST(r.completed_at_ns == w::find_file(*v, "adapter/adapter.pth")->mtime_ns);

  // The next epoch closes epoch 0's log: epoch 0's checkpoint is unchanged.
  const auto dir1 = run.begin_epoch(model, 1);
  const auto again = torchtune().recognise(*view(dir0));
  BOOST_TEST(again.fingerprint == r.fingerprint);
  BOOST_TEST(again.completed_at_ns == r.completed_at_ns);
  BOOST_TEST(static_cast<int>(torchtune().recognise(*view(dir1)).verdict) ==
             static_cast<int>(w::state::incomplete));

  t::torchtune_run hf_format(tmp / "job2",
                             {.algorithm = "dpo", .format = t::torchtune_format::huggingface});
  const auto dir = hf_format.begin_epoch("Llama3.1-8B-Instruct", 4);
  hf_format.finish_epoch();
  hf_format.close_log();
  r = torchtune().recognise(*view(dir));
  BOOST_TEST_REQUIRE(static_cast<int>(r.verdict) == static_cast<int>(w::state::settling),
                     r.problem);
  BOOST_TEST(r.epoch == 4);
  BOOST_TEST(dir.filename() == "Llama3.1-8B-Instruct-dpo-4");
}

BOOST_AUTO_TEST_CASE(disk_manifest) {
  t::temp_dir tmp;
  const auto dir = t::write_manifest_checkpoint(
      tmp / "checkpoint-7", {.epoch = 1, .train_loss = 0.5, .validation_loss = 0.25});
  BOOST_TEST(w::choose_layout("checkpoint-7", true, children_of(dir)) == &manifest());
  const auto r = manifest().recognise(*view(dir));
  BOOST_TEST_REQUIRE(r.metrics.has_value(), r.problem);
  BOOST_TEST(r.epoch == 1);
  BOOST_TEST(r.metrics->perplexity == std::exp(0.25), tt::tolerance(1e-12));

  const auto bad = t::write_manifest_checkpoint_raw(tmp / "bad", R"({"epoch": "one"})");
  const auto rb = manifest().recognise(*view(bad));
  BOOST_TEST(static_cast<int>(rb.verdict) == static_cast<int>(w::state::incomplete));
  BOOST_TEST(rb.problem.find("epoch") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(disk_view_listing_and_reads) {
  t::temp_dir tmp;
  const auto root = tmp / "cand";
  t::write_file(root / "a.txt", "hello world");
  t::write_file(root / "sub" / "b.bin", "0123456789");
  t::write_file(root / "sub" / "deeper" / "c" / "d.txt", "deep");
  t::write_file(tmp / "outside.txt", "secret");
  fs::create_symlink(tmp / "outside.txt", root / "link.txt");
  fs::create_directory_symlink(tmp.path(), root / "linkdir");
  BOOST_TEST_REQUIRE(::mkfifo((root / "fifo").c_str(), 0600) == 0);
  t::set_mtime(root / "a.txt", 1'500'000'000'123'456'789);

  const auto v = w::view_from_disk(root.string() + "/", 3);
  BOOST_TEST_REQUIRE(v.get() != nullptr);
  BOOST_TEST(v->name() == "cand");
  BOOST_TEST(v->is_dir());
  std::vector<std::string> rels;
  for (const auto& f : v->files()) rels.push_back(f.rel);
  // Sorted; no symlinks, no FIFO; depth 3 lists sub/deeper/c but not its content.
  const std::vector<std::string> expected = {"a.txt", "sub", "sub/b.bin", "sub/deeper",
                                             "sub/deeper/c"};
  BOOST_TEST(rels == expected, tt::per_element());
  const auto* a = w::find_file(*v, "a.txt");
  BOOST_TEST_REQUIRE(a != nullptr);
  BOOST_TEST(a->size == 11u);
  BOOST_TEST(a->mtime_ns == 1'500'000'000'123'456'789);
  BOOST_TEST(w::find_file(*v, "sub")->is_dir);

  BOOST_TEST(*v->read("a.txt", 0, 5) == "hello");
  BOOST_TEST(*v->read("a.txt", 6, 100) == "world");
  BOOST_TEST(v->read("a.txt", 11, 5)->empty());
  BOOST_TEST(v->read("a.txt", 1000, 5)->empty());
  BOOST_TEST(*v->read("sub/b.bin", 8, 8) == "89");
  BOOST_TEST(!v->read("missing", 0, 1).has_value());
  BOOST_TEST(!v->read("link.txt", 0, 10).has_value());
  BOOST_TEST(!v->read("linkdir/outside.txt", 0, 10).has_value());
  BOOST_TEST(!v->read("../outside.txt", 0, 10).has_value());
  BOOST_TEST(!v->read("sub/../a.txt", 0, 10).has_value());
  BOOST_TEST(!v->read("/etc/hostname", 0, 10).has_value());
  BOOST_TEST(!v->read("", 0, 10).has_value());
  BOOST_TEST(!v->read("sub", 0, 10).has_value());
  BOOST_TEST(!v->read("fifo", 0, 10).has_value());  // never blocks on a FIFO

  const auto shallow = w::view_from_disk(root, 1);
  BOOST_TEST(shallow->files().size() == 2u);  // a.txt, sub

  // A file candidate: one entry with rel "".
  const auto file = w::view_from_disk(root / "a.txt");
  BOOST_TEST_REQUIRE(file.get() != nullptr);
  BOOST_TEST(!file->is_dir());
  BOOST_TEST(file->name() == "a.txt");
  BOOST_TEST_REQUIRE(file->files().size() == 1u);
  BOOST_TEST(file->files()[0].rel.empty());
  BOOST_TEST(file->files()[0].size == 11u);
  BOOST_TEST(*file->read("", 0, 100) == "hello world");
  BOOST_TEST(!file->read("a.txt", 0, 100).has_value());

  BOOST_TEST(w::view_from_disk(tmp / "nope") == nullptr);
  BOOST_TEST(w::view_from_disk(root / "link.txt") == nullptr);
  BOOST_TEST(w::view_from_disk(root / "linkdir") == nullptr);
  BOOST_TEST(w::view_from_disk(root / "fifo") == nullptr);

  // Reads see the file as it is now, not as listed.
  t::write_file(root / "a.txt", "hi");
  BOOST_TEST(*v->read("a.txt", 0, 100) == "hi");
  fs::remove(root / "a.txt");
  BOOST_TEST(!v->read("a.txt", 0, 100).has_value());
}

BOOST_AUTO_TEST_CASE(fixture_bytes_are_valid) {
  // The fixtures' archives must be what real readers accept: check the
  // structure independently of the watcher's own checks.
  const std::string zip = t::zip_bytes(10, false);
  BOOST_TEST(zip.substr(0, 4) == std::string("PK\x03\x04", 4));
  BOOST_TEST(zip.substr(zip.size() - 22, 4) == std::string("PK\x05\x06", 4));
  const std::string st = t::safetensors_bytes(1, 4);
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<std::uint64_t>(static_cast<unsigned char>(st[i])) << (8 * i);
  BOOST_TEST(n % 8 == 0u);
  BOOST_TEST(st.size() == 8 + n + 16);
  const auto header = boost::json::parse(st.substr(8, n));
  BOOST_TEST(header.at("model.layers.0.weight").at("data_offsets").at(1).to_number<int>() == 16);
}

BOOST_AUTO_TEST_SUITE_END()
