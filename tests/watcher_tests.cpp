// watcher_tests: the pure "is this a finished checkpoint?" logic (layouts,
// format checks, staging names, layout choice), fed by hand-built in-memory
// candidates and by real folders that the fixtures write the way the trainers
// do. No inotify, no clock.

#include "filesystems.hpp"
#include "formats.hpp"
#include "layout.hpp"
#include "layouts.hpp"
#include "trainer_state.hpp"
#include "worker_pool.hpp"
#include "support/fixtures.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <future>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <variant>

namespace tt = boost::test_tools;
namespace fs = std::filesystem;
namespace w = ckptd::watcher;
namespace t = ckptd::test;

BOOST_TEST_DONT_PRINT_LOG_VALUE(ckptd::watcher::listing_end)

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
  memory_view& remove_sibling(const std::string& name) {
    siblings_.erase(name);
    return *this;
  }
  // Files further away: below the parent (up 0) or the grandparent (up 1).
  memory_view& add_beside(int up, const std::string& rel, std::string bytes,
                          std::int64_t mtime_ns = 1'000) {
    beside_[{up, rel}] = {std::move(bytes), mtime_ns};
    return *this;
  }
  std::optional<std::string> read_beside(int up, std::string_view rel, std::uint64_t offset,
                                         std::uint64_t length) const override {
    const auto it = beside_.find({up, std::string(rel)});
    if (it == beside_.end()) return std::nullopt;
    if (offset >= it->second.first.size()) return std::string();
    return it->second.first.substr(offset, length);
  }
  std::vector<w::file_info> list_beside(int up, std::string_view rel) const override {
    const std::string prefix = rel.empty() ? std::string() : std::string(rel) + "/";
    std::vector<w::file_info> out;
    for (const auto& [key, value] : beside_) {
      if (key.first != up || !key.second.starts_with(prefix)) continue;
      const auto name = key.second.substr(prefix.size());
      if (name.find('/') != std::string::npos) continue;
      out.push_back(w::file_info{name, false, value.first.size(), value.second});
    }
    return out;
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
  std::map<std::pair<int, std::string>, std::pair<std::string, std::int64_t>> beside_;
  mutable std::uint64_t bytes_read_ = 0;
};

const w::layout& hf() { return w::hf_trainer_layout(); }
const w::layout& torchtune() { return w::llama_stack_torchtune_layout(); }
const w::layout& manifest() { return w::manifest_layout(); }
const w::layout& tt_epoch() { return w::torchtune_epoch_layout(); }
const w::layout& lightning() { return w::lightning_layout(); }
const w::layout& deepspeed() { return w::deepspeed_layout(); }
const w::layout& megatron() { return w::megatron_layout(); }
const w::layout& dcp() { return w::dcp_layout(); }
const w::layout& orbax() { return w::orbax_layout(); }
const w::layout& nemo() { return w::nemo_layout(); }

int verdict(const w::recognition& r) { return static_cast<int>(r.verdict); }
constexpr int incomplete = static_cast<int>(w::state::incomplete);
constexpr int settling = static_cast<int>(w::state::settling);
constexpr int complete = static_cast<int>(w::state::complete);

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
        "model.safetensors.partial", "blob.incomplete", "megatron_gpt-v1.nemo", "x-v12.nemo"}) {
    BOOST_TEST(w::is_staging_name(name), "should be staging: \"" << name << "\"");
  }
  for (const std::string_view name :
       {"checkpoint-400", "Llama3.2-3B-Instruct-sft-0", ".metadata", "1000", "epoch_0",
        "trainer_state.json", "tmp", "checkpoint-tmp", "unfinished", "my.tmpl", "megatron_gpt.nemo",
        "x-v.nemo", "x-v1a.nemo", "-v1.nemo", "epoch=1-step=5-v1.ckpt"}) {
    BOOST_TEST(!w::is_staging_name(name), "should not be staging: \"" << name << "\"");
  }
}

BOOST_AUTO_TEST_CASE(all_layouts_are_distinct) {
  const auto& layouts = w::all_layouts();
  BOOST_TEST(layouts.size() == 10u);
  for (std::size_t i = 0; i < layouts.size(); ++i) {
    for (std::size_t j = i + 1; j < layouts.size(); ++j) {
      BOOST_TEST(layouts[i]->specificity() != layouts[j]->specificity());
      BOOST_TEST(layouts[i]->name() != layouts[j]->name());
    }
  }
  BOOST_TEST(manifest().marker_file() == w::manifest_file);
  BOOST_TEST(hf().marker_file().empty());
  BOOST_TEST(torchtune().marker_file().empty());
  BOOST_TEST(orbax().marker_file() == w::orbax_metadata_file);
  for (const auto* l : layouts) {
    if (l != &manifest() && l != &orbax()) BOOST_TEST(l->marker_file().empty(), l->name());
  }
  // Listed in decreasing specificity; Orbax, the most generic, last.
  for (std::size_t i = 1; i < layouts.size(); ++i) {
    BOOST_TEST(layouts[i - 1]->specificity() > layouts[i]->specificity());
  }
  BOOST_TEST(layouts.back() == &orbax());
}

BOOST_AUTO_TEST_CASE(choose_layout_by_name) {
  const std::vector<std::string> none;
  BOOST_TEST(w::choose_layout("checkpoint-400", true, none) == &hf());
  BOOST_TEST(w::choose_layout("checkpoint-0", true, none) == &hf());
  BOOST_TEST(w::choose_layout("checkpoint-999999999999999999", true, none) == &hf());
  BOOST_TEST(w::choose_layout("Llama3.2-3B-Instruct-sft-0", true, none) == &torchtune());
  BOOST_TEST(w::choose_layout("Llama-3.1-8B-Instruct-dpo-12", true, none) == &torchtune());
  BOOST_TEST(w::choose_layout("my-model-sft-sft-3", true, none) == &torchtune());
  for (const std::string_view name :
       {"checkpoint-", "checkpoint-0400", "checkpoint--1", "checkpoint-+1", "checkpoint-1a",
        "checkpoint-1.5", "checkpoint-1000000000000000000", "Checkpoint-400", "xcheckpoint-400",
        "tmp-checkpoint-400", "-sft-0", "sft-0", "model-sft-", "model-sft-01", "model-ppo-1",
        "model-sft-0x", "model-sft-1234567890", "merged_model"}) {
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

// A safetensors file of this JSON header and `data_bytes` zero bytes of data.
std::string safetensors_with_header(std::string_view json, std::size_t data_bytes) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((json.size() >> (8 * i)) & 0xFF));
  return out.append(json).append(data_bytes, '\0');
}

BOOST_AUTO_TEST_CASE(safetensors_size_rule) {
  const std::string good = t::safetensors_bytes(3, 5);
  {
    memory_view v("c");
    v.add("model.safetensors", good);
    BOOST_TEST(w::safetensors_problem(v, *w::find_file(v, "model.safetensors")).empty());
  }
  {
    // One read of at most 64 KiB covers the length and the header; the
    // tensor data beyond it is never read.
    const std::string large = t::safetensors_bytes(2, 256 * 1024);
    memory_view v("c");
    v.add("model.safetensors", large);
    BOOST_TEST(w::safetensors_problem(v, *w::find_file(v, "model.safetensors")).empty());
    BOOST_TEST(v.bytes_read() <= 64u * 1024);
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

  // An absurd header length is refused without reading it (beyond the
  // first read).
  std::string absurd = good;
  absurd.replace(0, 8, std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8));
  memory_view huge("c");
  huge.add("model.safetensors", absurd);
  BOOST_TEST(w::safetensors_problem(huge, huge.files()[0]).find("implausible") !=
             std::string::npos);
  BOOST_TEST(huge.bytes_read() <= good.size());

  const auto problem_of = [](std::string bytes) {
    memory_view v("c");
    v.add("x.safetensors", std::move(bytes));
    return w::safetensors_problem(v, v.files()[0]);
  };
  BOOST_TEST(problem_of(safetensors_with_header(R"({"__metadata__":{"a":"b"}})", 0)).empty());
  BOOST_TEST(problem_of(safetensors_with_header(
                            R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8))
                 .empty());
  BOOST_TEST(!problem_of(safetensors_with_header(
                             R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 7))
                  .empty());
  BOOST_TEST(!problem_of(safetensors_with_header(R"({"t":{"data_offsets":[8,0]}})", 8)).empty());
  BOOST_TEST(!problem_of(safetensors_with_header(R"({"t":{"data_offsets":[0]}})", 8)).empty());
  BOOST_TEST(!problem_of(safetensors_with_header(R"({"t":{"data_offsets":"0-8"}})", 8)).empty());
  BOOST_TEST(!problem_of(safetensors_with_header(R"({"t":{"data_offsets":[-1,8]}})", 9)).empty());
  BOOST_TEST(!problem_of(safetensors_with_header(R"([1,2])", 0)).empty());
  BOOST_TEST(!problem_of(safetensors_with_header(R"({"t":)", 0)).empty());
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
  auto v = w::parse_python_json(R"({"a": NaN, "b": [Infinity, -Infinity], "c": "NaN Infinity"})",
                                ec, {});
  BOOST_TEST_REQUIRE(!ec);
  BOOST_TEST(v.at("a").is_null());
  BOOST_TEST(v.at("b").at(0).is_null());
  BOOST_TEST(v.at("b").at(1).is_null());
  BOOST_TEST(v.at("c").as_string() == "NaN Infinity");
  v = w::parse_python_json(R"({"s": "a\"NaN", "x": 1})", ec, {});
  BOOST_TEST_REQUIRE(!ec);
  BOOST_TEST(v.at("s").as_string() == "a\"NaN");
  // Each literal alone, so each is found by the scan that decides whether
  // any is there at all.
  for (const auto* text : {R"({"x": Infinity})", R"({"x": -Infinity})", R"({"x": NaN})"}) {
    v = w::parse_python_json(text, ec, {});
    BOOST_TEST_REQUIRE(!ec, text);
    BOOST_TEST(v.at("x").is_null(), text);
  }
  w::parse_python_json(R"({"a": Nan})", ec, {});
  BOOST_TEST(ec.failed());
  w::parse_python_json(R"({"a": 1)", ec, {});
  BOOST_TEST(ec.failed());
}

BOOST_AUTO_TEST_CASE(python_json_into_an_arena) {
  // Values parsed into an arena live in it, whether the document fits its
  // buffer or spills to the heap.
  w::json_arena arena;
  boost::system::error_code ec;
  const auto small = w::parse_python_json(R"({"loss": NaN, "step": 7})", ec, arena.storage());
  BOOST_TEST_REQUIRE(!ec);
  BOOST_TEST(small.storage().get() == arena.storage().get());
  BOOST_TEST(small.at("loss").is_null());
  BOOST_TEST(small.at("step").as_int64() == 7);

  boost::json::array history;
  for (int i = 0; i < 2'000; ++i) {
    history.push_back(
        boost::json::object{{"step", i},
                            {"loss", 1.0 / (i + 1)},
                            {"note", "a string long enough to allocate " + std::to_string(i)}});
  }
  const std::string text = boost::json::serialize(boost::json::object{{"log_history", history}});
  BOOST_TEST_REQUIRE(text.size() > 100'000u);
  w::json_arena big_arena;
  const auto big = w::parse_python_json(text, ec, big_arena.storage());
  BOOST_TEST_REQUIRE(!ec);
  BOOST_TEST(big.storage().get() == big_arena.storage().get());
  BOOST_TEST(big.at("log_history").as_array().size() == 2'000u);
  BOOST_TEST(big.at("log_history").at(1'999).at("note").as_string() ==
             "a string long enough to allocate 1999");
  BOOST_TEST(big.at("log_history").at(1'999).at("step").as_int64() == 1'999);
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

namespace {

// Everything a dir_reader yields for the folder at `dir`: name -> DT_* type.
// Fails the test when the listing ends with an error.
std::map<std::string, unsigned char> read_entries(const fs::path& dir,
                                                  w::listing_end end = w::listing_end::empty_read,
                                                  unsigned* reads = nullptr) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  BOOST_TEST_REQUIRE(fd >= 0);
  std::map<std::string, unsigned char> out;
  w::dir_reader reader(fd, end);
  w::dir_entry_view e;
  while (reader.next(e)) {
    BOOST_TEST(e.name.data()[e.name.size()] == '\0');  // usable as a C string
    BOOST_TEST(out.emplace(std::string(e.name), e.type).second, "twice: " << e.name);
  }
  BOOST_TEST(reader.error() == 0);
  BOOST_TEST(!reader.next(e));  // stays at the end
  if (reads != nullptr) *reads = reader.reads();
  ::close(fd);
  return out;
}

// Whether the filesystem holding `dir` fills every getdents64 read.
bool fills_every_read_at(const fs::path& dir) {
  struct statfs st {};
  BOOST_TEST_REQUIRE(::statfs(dir.c_str(), &st) == 0);
  return w::fills_every_read(static_cast<std::uint64_t>(st.f_type));
}

}  // namespace

BOOST_AUTO_TEST_CASE(dir_reader_lists_every_entry_once) {
  t::temp_dir tmp;
  const auto empty = tmp / "empty";
  fs::create_directory(empty);
  BOOST_TEST(read_entries(empty).empty());  // no "." or ".."

  // Enough long names to need several getdents64 calls into the 8 KiB buffer.
  const auto big = tmp / "big";
  std::set<std::string> expected;
  for (int i = 0; i < 600; ++i) {
    const auto name = "checkpoint-" + std::to_string(i) + std::string(40, 'x');
    t::write_file(big / name, "");
    expected.insert(name);
  }
  fs::create_directory(big / "sub");
  fs::create_symlink("nowhere", big / "link");
  BOOST_TEST_REQUIRE(::mkfifo((big / "fifo").c_str(), 0600) == 0);
  expected.insert({"sub", "link", "fifo"});
  const auto got = read_entries(big);
  std::set<std::string> names;
  for (const auto& [name, type] : got) names.insert(name);
  BOOST_TEST(names == expected, tt::per_element());
  // Types as the kernel reports them, where the filesystem reports any.
  const auto type_of = [&](const std::string& name) { return got.at(name); };
  if (type_of("sub") != DT_UNKNOWN) {
    BOOST_TEST(type_of("sub") == DT_DIR);
    BOOST_TEST(type_of("link") == DT_LNK);
    BOOST_TEST(type_of("fifo") == DT_FIFO);
    BOOST_TEST(type_of(*expected.begin()) == DT_REG);
  }

  // Not a folder: the listing ends at once with the kernel's error.
  const int file_fd = ::open((big / "sub").c_str(), O_PATH | O_CLOEXEC);
  BOOST_TEST_REQUIRE(file_fd >= 0);
  w::dir_reader path_reader(file_fd);
  w::dir_entry_view e;
  BOOST_TEST(!path_reader.next(e));
  BOOST_TEST(path_reader.error() == EBADF);  // O_PATH descriptors cannot be listed
  ::close(file_fd);
  const int reg_fd = ::open((big / *expected.begin()).c_str(), O_RDONLY | O_CLOEXEC);
  BOOST_TEST_REQUIRE(reg_fd >= 0);
  w::dir_reader reg_reader(reg_fd);
  BOOST_TEST(!reg_reader.next(e));
  BOOST_TEST(reg_reader.error() == ENOTDIR);
  ::close(reg_fd);
}

BOOST_AUTO_TEST_CASE(dir_reader_ends_at_a_short_read_where_trusted) {
  std::optional<t::temp_dir> tmp_holder;
  tmp_holder.emplace();
  if (!fills_every_read_at(tmp_holder->path())) {
    // Reading to the empty read is the only safe way there (overlay in a
    // container, say); tmpfs at /dev/shm is the usual way out.
    BOOST_TEST(w::listing_end_below(tmp_holder->path().string()) == w::listing_end::empty_read);
    BOOST_TEST_REQUIRE(fills_every_read_at("/dev/shm"),
                       "neither the temporary folder nor /dev/shm fills every read");
    tmp_holder.emplace("ckptd-test", "/dev/shm");
  }
  const t::temp_dir& tmp = *tmp_holder;
  BOOST_TEST(w::listing_end_below(tmp.path().string()) == w::listing_end::short_read);

  // A checkpoint-sized folder: one read instead of two.
  const auto small = tmp / "checkpoint-10";
  for (const char* name : {"config.json", "model.safetensors", "trainer_state.json"}) {
    t::write_file(small / name, "{}");
  }
  unsigned careful = 0;
  unsigned trusting = 0;
  const auto all = read_entries(small, w::listing_end::empty_read, &careful);
  BOOST_TEST(read_entries(small, w::listing_end::short_read, &trusting) == all);
  BOOST_TEST(all.size() == 3u);
  BOOST_TEST(careful == 2u);
  BOOST_TEST(trusting == 1u);
  unsigned empty_reads = 0;
  fs::create_directory(tmp / "empty");
  BOOST_TEST(read_entries(tmp / "empty", w::listing_end::short_read, &empty_reads).empty());
  BOOST_TEST(empty_reads == 1u);

  // Names of every length up to NAME_MAX: reads end with anything from no
  // room to almost a whole record's room left, and none may end the listing
  // early. Several folders, so the reads fall differently in each.
  std::mt19937 random(7);
  for (int folder = 0; folder < 4; ++folder) {
    const auto big = tmp / ("big" + std::to_string(folder));
    fs::create_directory(big);
    std::set<std::string> expected;
    for (int i = 0; i < 300; ++i) {
      const std::size_t length = std::uniform_int_distribution<std::size_t>(1, 255)(random);
      auto name = std::to_string(i) + "-";
      name.resize(std::max(length, name.size()), 'n');
      t::write_file(big / name, "");
      expected.insert(name);
    }
    unsigned reads = 0;
    std::set<std::string> names;
    for (const auto& [name, type] : read_entries(big, w::listing_end::short_read, &reads)) {
      names.insert(name);
    }
    BOOST_TEST(names == expected, tt::per_element());
    BOOST_TEST(reads > 1u);
  }
}

BOOST_AUTO_TEST_CASE(listings_end_at_empty_reads_above_other_mounts) {
  // Every Linux system mounts /proc below "/".
  BOOST_TEST(w::listing_end_below("/") == w::listing_end::empty_read);
  BOOST_TEST(w::listing_end_below("/no/such/folder") == w::listing_end::empty_read);

  const std::string_view mountinfo =
      "21 26 0:20 / /proc rw,relatime - proc proc rw\n"
      "26 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
      "40 26 0:40 / /data/runs/job\\040one/nfs rw - nfs srv:/x rw\n"
      "41 26 0:41 / /scratch rw - tmpfs tmpfs rw\n"
      "42 26 0:42 /sub /srv/bind rw - ext4 /dev/vdb rw";
  BOOST_TEST(w::mount_point_below(mountinfo, "/"));
  BOOST_TEST(w::mount_point_below(mountinfo, "/data"));
  BOOST_TEST(w::mount_point_below(mountinfo, "/data/runs/job one"));       // "\040" is a space
  BOOST_TEST(!w::mount_point_below(mountinfo, "/data/runs/job one/nfs"));  // the mount itself
  BOOST_TEST(!w::mount_point_below(mountinfo, "/data/runs/job"));          // a prefix, not a parent
  BOOST_TEST(!w::mount_point_below(mountinfo, "/scratch"));
  BOOST_TEST(!w::mount_point_below(mountinfo, "/scratch/runs"));
  BOOST_TEST(w::mount_point_below(mountinfo, "/srv"));
  BOOST_TEST(!w::mount_point_below(mountinfo, "/sr"));
  BOOST_TEST(!w::mount_point_below("", "/"));

  BOOST_TEST(w::fills_every_read(0xEF53u));       // ext4
  BOOST_TEST(w::fills_every_read(0x01021994u));   // tmpfs
  BOOST_TEST(!w::fills_every_read(0x65735546u));  // FUSE
  BOOST_TEST(!w::fills_every_read(0x6969u));      // NFS
  BOOST_TEST(!w::fills_every_read(0x794C7630u));  // overlay
}

BOOST_AUTO_TEST_CASE(dir_reader_on_many_threads) {
  // Each reader has its own buffer: folders listed at the same time on
  // different threads do not see each other's entries.
  t::temp_dir tmp;
  constexpr int folders = 4;
  constexpr int files_per_folder = 300;
  for (int f = 0; f < folders; ++f) {
    const auto dir = tmp / ("d" + std::to_string(f));
    for (int i = 0; i < files_per_folder; ++i) {
      const auto name = "f" + std::to_string(f) + "-" + std::to_string(i) + std::string(30, 'y');
      t::write_file(dir / name, "");
    }
  }
  std::vector<std::map<std::string, unsigned char>> results(folders);
  std::vector<int> rounds_ok(folders, 0);
  {
    std::vector<std::jthread> threads;
    for (int f = 0; f < folders; ++f) {
      threads.emplace_back([&, f] {
        const auto dir = tmp / ("d" + std::to_string(f));
        const std::string prefix = "f" + std::to_string(f) + "-";
        for (int round = 0; round < 50; ++round) {
          const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
          if (fd < 0) return;
          w::dir_reader reader(fd);
          w::dir_entry_view e;
          int count = 0;
          bool own = true;
          while (reader.next(e)) {
            ++count;
            own = own && e.name.starts_with(prefix);
          }
          ::close(fd);
          if (own && count == files_per_folder && reader.error() == 0) ++rounds_ok[f];
        }
      });
    }
  }
  for (int f = 0; f < folders; ++f) BOOST_TEST(rounds_ok[f] == 50);
}

BOOST_AUTO_TEST_CASE(disk_view_reads_files_changed_since_listing) {
  // Reads of listed files trust the listed size instead of an fstat; files
  // that changed since must still read as they are now.
  t::temp_dir tmp;
  const auto root = tmp / "cand";
  t::write_file(root / "grows.txt", "abc");
  t::write_file(root / "shrinks.txt", std::string(100, 's'));
  t::write_file(root / "becomes-fifo", "data");
  t::write_file(root / "becomes-dir", "data");
  t::write_file(root / "same.txt", "unchanged");
  const auto v = view(root);
  BOOST_TEST_REQUIRE(w::find_file(*v, "grows.txt")->size == 3u);

  // Grown well past the listed size (several buffer doublings).
  std::string grown;
  for (int i = 0; grown.size() < 50'000; ++i) grown += std::to_string(i) + ",";
  t::write_file(root / "grows.txt", grown);
  constexpr std::uint64_t generous = (64ull << 20) + 1;
  BOOST_TEST(*v->read("grows.txt", 0, generous) == grown);
  BOOST_TEST(*v->read("grows.txt", 0, 5) == grown.substr(0, 5));
  BOOST_TEST(*v->read("grows.txt", 2, 10) == grown.substr(2, 10));
  BOOST_TEST(*v->read("grows.txt", 10, generous) == grown.substr(10));
  BOOST_TEST(*v->read("grows.txt", 40'000, 4) == grown.substr(40'000, 4));  // beyond the listing
  BOOST_TEST(v->read("grows.txt", 0, 0)->empty());

  // Shrunk: what is there now, and nothing past its new end.
  t::write_file(root / "shrinks.txt", "tiny");
  BOOST_TEST(*v->read("shrinks.txt", 0, generous) == "tiny");
  BOOST_TEST(*v->read("shrinks.txt", 2, 50) == "ny");
  BOOST_TEST(v->read("shrinks.txt", 50, 10)->empty());

  // Replaced by a FIFO (no writer: a blocking read would hang) or a folder:
  // not a file to read.
  fs::remove(root / "becomes-fifo");
  BOOST_TEST_REQUIRE(::mkfifo((root / "becomes-fifo").c_str(), 0600) == 0);
  BOOST_TEST(!v->read("becomes-fifo", 0, generous).has_value());
  BOOST_TEST(!v->read("becomes-fifo", 0, 0).has_value());
  fs::remove(root / "becomes-dir");
  fs::create_directory(root / "becomes-dir");
  BOOST_TEST(!v->read("becomes-dir", 0, generous).has_value());
  BOOST_TEST(!v->read("becomes-dir", 0, 0).has_value());

  // A generous limit is not allocated up front.
  const auto same = v->read("same.txt", 0, generous);
  BOOST_TEST_REQUIRE(same.has_value());
  BOOST_TEST(*same == "unchanged");
  BOOST_TEST(same->capacity() < 4096u);

  // A file candidate replaced by a FIFO after listing.
  t::write_file(tmp / "single.bin", "12345678");
  const auto file = view(tmp / "single.bin");
  fs::remove(tmp / "single.bin");
  BOOST_TEST_REQUIRE(::mkfifo((tmp / "single.bin").c_str(), 0600) == 0);
  BOOST_TEST(!file->read("", 0, 100).has_value());
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

// ---------------------------------------------------------------------------
// Layouts beyond HF, llama-stack torchtune and the manifest: names and choice

BOOST_AUTO_TEST_CASE(choose_layout_trainer_names) {
  const std::vector<std::string> none;
  const std::vector<std::pair<std::string, const w::layout*>> dirs = {
      {"epoch_0", &tt_epoch()},
      {"epoch_12", &tt_epoch()},
      {"step_1000", &tt_epoch()},
      {"global_step1200", &deepspeed()},
      {"global_step0", &deepspeed()},
      {"iter_0001500", &megatron()},
      {"iter_0000000", &megatron()},
      {"iter_12345678", &megatron()},
      {"release", &megatron()},
      {"step-500", &dcp()},
      {"step-0", &dcp()},
      {"1000", &orbax()},
      {"0001000", &orbax()},
      {"0", &orbax()},
      {"ckpt_5", &orbax()},
      {"iter_123", &orbax()},  // too few digits for Megatron
      {"iter_00015", &orbax()},
      {"iter_012345678", &orbax()},  // 8 digits: Megatron pads to 7 only
      {"checkpoint_400", &orbax()},
      {"checkpoint_0000400", &orbax()},
      {"epoch_01", &orbax()},  // torchtune never pads
      {"step_007", &orbax()},
      {"epoch=4-step=1250.ckpt", &lightning()},  // DeepSpeed/FSDP strategy folders
      {"x--val_loss=0.41-epoch=3.ckpt", &lightning()},
      {"megatron_gpt--val_loss=2.1034-epoch=0-consumed_samples=20480.0", &nemo()},
      {"megatron_gpt--val_loss=2.1034-epoch=0-consumed_samples=20480.0-last", &nemo()},
      {"m--val_loss=1.5-sft-3", &nemo()},  // NeMo's pattern beats llama-stack's
  };
  for (const auto& [name, expected] : dirs) {
    const auto* got = w::choose_layout(name, true, none);
    BOOST_TEST((got == expected), name << " -> " << (got ? got->name() : "nullptr"));
  }
  const std::vector<std::pair<std::string, const w::layout*>> files = {
      {"epoch=4-step=1250.ckpt", &lightning()},
      {"epoch=2-step=750-val_loss=0.41.ckpt", &lightning()},
      {"epoch=4-step=1250-v1.ckpt", &lightning()},
      {"last.ckpt", &lightning()},
      {"anything.ckpt", &lightning()},
      {"megatron_gpt--val_loss=0.4567-epoch=3.ckpt", &nemo()},
      {"megatron_gpt--val_loss=0.4567-epoch=3-last.ckpt", &nemo()},
      {"megatron_gpt.nemo", &nemo()},
      {"x--nofield.ckpt", &lightning()},
  };
  for (const auto& [name, expected] : files) {
    const auto* got = w::choose_layout(name, false, none);
    BOOST_TEST((got == expected), name << " -> " << (got ? got->name() : "nullptr"));
  }
  for (const std::string& name : std::vector<std::string>{
           "global_step", "global_step01", "global_step-1", "Global_step1", "iter_", "step-",
           "step-01", "step-1a", "epoch_", "_100", "12a", "1e5", "-1", "1000000000000000000", "abc",
           "checkpoints", "lightning_logs", "logs", "x--val_loss", "ckpt", "step_", "step_-1",
           std::string("1\xff", 2), "\n",
           // Other tools' "<word>_<N>" folders are not Orbax's by name: the
           // engine would not look inside them any more.
           "version_0", "run_3", "trial_7", "seed_42", "my_run_step_0042", "fold_1"}) {
    BOOST_TEST(w::choose_layout(name, true, none) == nullptr, "claimed folder: " << name);
  }
  for (const std::string name :
       {".ckpt", "epoch_0", "1000", "global_step5", "x.ckpt.tmp", "x.nemo.partial", "model-v3.nemo",
        ".nemo", "metrics.csv", "latest", "x--val_loss=1-unfinished"}) {
    BOOST_TEST(w::choose_layout(name, false, none) == nullptr, "claimed file: " << name);
  }
  // Orbax's marker beats the names it shares with others, the manifest beats Orbax.
  const std::vector<std::string> orbax_children = {"_CHECKPOINT_METADATA", "default"};
  BOOST_TEST(w::choose_layout("step_100", true, orbax_children) == &orbax());
  BOOST_TEST(w::choose_layout("epoch_3", true, orbax_children) == &orbax());
  BOOST_TEST(w::choose_layout("iter_0000100", true, orbax_children) == &orbax());
  BOOST_TEST(w::choose_layout("1000", true, orbax_children) == &orbax());
  BOOST_TEST(w::choose_layout("step_100", true,
                              {"_CHECKPOINT_METADATA", "ckptd-checkpoint.json"}) == &manifest());
  BOOST_TEST(w::choose_layout("step_100", true, {"_CHECKPOINT_METADATA.tmp"}) == &tt_epoch());
  BOOST_TEST(w::choose_layout("1000.orbax-checkpoint-tmp", true, orbax_children) == nullptr);
}

BOOST_AUTO_TEST_CASE(sibling_markers) {
  BOOST_TEST(deepspeed().watches_sibling("latest"));
  BOOST_TEST(!deepspeed().watches_sibling("latest.tmp"));
  BOOST_TEST(megatron().watches_sibling("latest_checkpointed_iteration.txt"));
  BOOST_TEST(!megatron().watches_sibling("progress.txt"));
  BOOST_TEST(nemo().watches_sibling("megatron_gpt--val_loss=2.1-epoch=0-unfinished"));
  BOOST_TEST(!nemo().watches_sibling("-unfinished"));
  BOOST_TEST(!lightning().watches_sibling("metrics.csv"));
  BOOST_TEST(deepspeed().sibling_inputs("global_step5", true) == std::vector<std::string>{"latest"},
             tt::per_element());
  BOOST_TEST(nemo().sibling_inputs("m--val_loss=1.0-epoch=2-EMA.ckpt", false) ==
                 std::vector<std::string>{"m--val_loss=1.0-epoch=2-unfinished"},
             tt::per_element());
  BOOST_TEST(nemo().sibling_inputs("m.nemo", false) == std::vector<std::string>{"m-unfinished"},
             tt::per_element());
  BOOST_TEST(hf().sibling_inputs("checkpoint-5", true).empty());
}

// ---------------------------------------------------------------------------
// Shared helpers

BOOST_AUTO_TEST_CASE(decimal_float_and_name_fields) {
  BOOST_TEST(*w::parse_decimal("0", false) == 0);
  BOOST_TEST(*w::parse_decimal("1200", false) == 1200);
  BOOST_TEST(!w::parse_decimal("012", false).has_value());
  BOOST_TEST(*w::parse_decimal("012", true) == 12);
  for (const std::string_view bad :
       {"", "+1", "-1", "1 ", " 1", "1.0", "0x10", "1000000000000000000"}) {
    BOOST_TEST(!w::parse_decimal(bad, true).has_value(), bad);
  }
  BOOST_TEST(*w::parse_float("0.41") == 0.41);
  BOOST_TEST(*w::parse_float("1e-05") == 1e-05);
  BOOST_TEST(*w::parse_float("-2") == -2.0);
  BOOST_TEST(std::isnan(*w::parse_float("nan")));
  BOOST_TEST(std::isinf(*w::parse_float("inf")));
  for (const std::string_view bad : {"", "0.41x", " 1", "tensor(1.0)", "1,5", "+1"}) {
    BOOST_TEST(!w::parse_float(bad).has_value(), bad);
  }
  BOOST_TEST(w::trim_ascii(" \t global_step5\r\n") == "global_step5");
  BOOST_TEST(w::trim_ascii(" \n ").empty());

  const auto fields = [](std::string_view stem) {
    std::vector<std::string> out;
    for (const auto& f : w::name_fields(stem))
      out.push_back(std::string(f.key) + "|" + std::string(f.value));
    return out;
  };
  using v = std::vector<std::string>;
  BOOST_TEST(fields("epoch=4-step=1250") == (v{"epoch|4", "step|1250"}), tt::per_element());
  BOOST_TEST(
      fields("epoch=2-step=750-val_loss=0.41") == (v{"epoch|2", "step|750", "val_loss|0.41"}),
      tt::per_element());
  BOOST_TEST(fields("lr=1e-05-epoch=3") == (v{"lr|1e-05", "epoch|3"}), tt::per_element());
  BOOST_TEST(fields("val_loss=-0.5-epoch=1") == (v{"val_loss|-0.5", "epoch|1"}), tt::per_element());
  BOOST_TEST(fields("megatron_gpt--val_loss=2.1034-epoch=0-consumed_samples=20480.0") ==
                 (v{"val_loss|2.1034", "epoch|0", "consumed_samples|20480.0"}),
             tt::per_element());
  BOOST_TEST(fields("model-epoch=4") == (v{"epoch|4"}), tt::per_element());
  BOOST_TEST(fields("last").empty());
  BOOST_TEST(fields("=5-a==3-b=").size() ==
             2u);  // "a" has value "=3"? no: a key ends at its first '='
  BOOST_TEST(fields("").empty());
  BOOST_TEST(fields("---").empty());

  std::string note;
  auto m = w::metrics_if_known(2, 1.5, 1.25, std::nullopt, note);
  BOOST_TEST_REQUIRE(m.has_value());
  BOOST_TEST(m->epoch == 2);
  BOOST_TEST(m->perplexity == std::exp(1.25), tt::tolerance(1e-12));
  m = w::metrics_if_known(2, 1.5, 1.25, 3.0, note);
  BOOST_TEST(m->perplexity == 3.0);
  BOOST_TEST(!w::metrics_if_known(0, std::nullopt, 1.0, std::nullopt, note).has_value());
  BOOST_TEST(note.find("training") != std::string::npos);
  BOOST_TEST(!w::metrics_if_known(0, 1.0, std::nullopt, std::nullopt, note).has_value());
  BOOST_TEST(note.find("validation") != std::string::npos);
  BOOST_TEST(
      !w::metrics_if_known(0, 1.0, 1000.0, std::nullopt, note).has_value());  // exp overflows
  BOOST_TEST(!w::metrics_if_known(0, std::nan(""), 1.0, std::nullopt, note).has_value());
  BOOST_TEST((w::role_of_metric("val_loss") == w::metric_role::validation_loss));
  BOOST_TEST((w::role_of_metric("val/loss") == w::metric_role::validation_loss));
  BOOST_TEST((w::role_of_metric("eval_loss") == w::metric_role::validation_loss));
  BOOST_TEST((w::role_of_metric("loss") == w::metric_role::train_loss));
  BOOST_TEST((w::role_of_metric("train_loss") == w::metric_role::train_loss));
  BOOST_TEST((w::role_of_metric("val_acc") == w::metric_role::none));
}

BOOST_AUTO_TEST_CASE(tar_end_blocks) {
  const std::string good = t::tar_bytes({{"./model_config.yaml", "a: 1\n"},
                                         {"./model_weights.ckpt", t::zip_bytes(600)},
                                         {"./empty", ""}});
  BOOST_TEST(good.size() % 10240 == 0u);
  {
    memory_view v("m.nemo", false);
    v.add("", good);
    const auto problem = w::tar_problem(v, v.files()[0]);
    BOOST_TEST(problem.empty(), problem);
    BOOST_TEST(v.bytes_read() <= 512u * 5);  // one block per member, plus the end blocks
    BOOST_TEST(!w::is_gzip(v, v.files()[0]));
  }
  // Every cut before the end blocks is caught; padding after them is optional.
  const std::size_t end_blocks_at =
      512 + 512 + 512 + 2 * 512 + 512 * ((t::zip_bytes(600).size() + 511) / 512) - 512;
  for (std::size_t cut = 0; cut < good.size(); cut += (cut < 5000 ? 1 : 97)) {
    memory_view v("m.nemo", false);
    v.add("", good.substr(0, cut));
    const bool whole = cut >= end_blocks_at + 1024;
    BOOST_TEST(w::tar_problem(v, v.files()[0]).empty() == whole, "cut at " << cut);
  }
  // A damaged header, garbage, zeros, a member claiming more than the file.
  std::string damaged = good;
  damaged[10] ^= 0x20;
  for (const std::string& bad : {damaged, std::string(4096, 'x'), std::string(20480, '\0'),
                                 std::string("\x1f\x8b\x08\x00", 4) + std::string(2000, 'z')}) {
    memory_view v("m.nemo", false);
    v.add("", bad);
    BOOST_TEST(!w::tar_problem(v, v.files()[0]).empty());
  }
  std::string huge = good;
  huge.replace(124, 11, "77777777777");  // size field, checksum no longer matches either
  memory_view h("m.nemo", false);
  h.add("", huge);
  BOOST_TEST(!w::tar_problem(h, h.files()[0]).empty());
  memory_view gz("m.nemo", false);
  gz.add("", std::string("\x1f\x8b\x08\x00", 4) + std::string(100, 'z'));
  BOOST_TEST(w::is_gzip(gz, gz.files()[0]));
}

// ---------------------------------------------------------------------------
// DeepSpeed

memory_view deepspeed_tag(std::int64_t step, const std::string& latest) {
  memory_view v("global_step" + std::to_string(step));
  v.add("mp_rank_00_model_states.pt", t::zip_bytes(100), 5'000);
  v.add("zero_pp_rank_0_mp_rank_00_optim_states.pt", t::zip_bytes(50), 6'000);
  v.add_sibling("latest", latest);
  return v;
}

BOOST_AUTO_TEST_CASE(deepspeed_latest_decides) {
  auto r = deepspeed().recognise(deepspeed_tag(1200, "global_step1200"));
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.step == 1200);
  BOOST_TEST(r.epoch == 0);
  BOOST_TEST(!r.metrics.has_value());
  BOOST_TEST(r.completed_at_ns == 5'000);
  BOOST_TEST(r.problem.empty());
  const auto fingerprint = r.fingerprint;
  // latest moved on to a newer tag: still complete, same fingerprint.
  r = deepspeed().recognise(deepspeed_tag(1200, "global_step1600\n"));
  BOOST_TEST(verdict(r) == complete);
  BOOST_TEST(r.fingerprint == fingerprint);
  // A late optimizer shard refreshes nothing.
  auto late = deepspeed_tag(1200, "global_step1200");
  late.add("zero_pp_rank_1_mp_rank_00_optim_states.pt", t::zip_bytes(50), 9'000);
  BOOST_TEST(deepspeed().recognise(late).fingerprint == fingerprint);
  // latest still names an older tag: this one is being saved; quietly.
  r = deepspeed().recognise(deepspeed_tag(1200, "global_step800"));
  BOOST_TEST(verdict(r) == incomplete);
  BOOST_TEST(r.problem.empty());
  auto missing = deepspeed_tag(1200, "");
  missing.remove_sibling("latest");
  r = deepspeed().recognise(missing);
  BOOST_TEST(verdict(r) == incomplete);
  BOOST_TEST(r.problem.empty());
  // Junk in latest.
  for (const std::string& junk : std::vector<std::string>{
           "checkpoint", "global_step", "global_stepX", "global_step-5", std::string("\xff\xfe", 2),
           "global_step1200 extra", std::string(5000, 'g')}) {
    r = deepspeed().recognise(deepspeed_tag(1200, junk));
    BOOST_TEST(verdict(r) == incomplete, "accepted latest: " << junk);
  }
  BOOST_TEST(verdict(deepspeed().recognise(deepspeed_tag(1200, " \n"))) == incomplete);
  // Model states truncated (every length), or none at all.
  const std::string states = t::zip_bytes(100);
  for (std::size_t cut = 0; cut < states.size(); cut += 7) {
    memory_view v("global_step3");
    v.add("mp_rank_00_model_states.pt", states.substr(0, cut));
    v.add_sibling("latest", "global_step3");
    r = deepspeed().recognise(v);
    BOOST_TEST(verdict(r) == incomplete, "cut " << cut);
    BOOST_TEST(!r.problem.empty());
  }
  memory_view empty("global_step3");
  empty.add_sibling("latest", "global_step3");
  BOOST_TEST(verdict(deepspeed().recognise(empty)) == incomplete);
  memory_view not_tag("global_step03");
  BOOST_TEST(verdict(deepspeed().recognise(not_tag)) == incomplete);
}

BOOST_AUTO_TEST_CASE(disk_deepspeed_run) {
  t::temp_dir tmp;
  t::deepspeed_run run(tmp / "ds", {.data_parallel_ranks = 3, .late_last_rank = true});
  const auto dir = run.begin_save(100);
  BOOST_TEST(verdict(deepspeed().recognise(*view(dir))) == incomplete);
  run.finish_save();
  auto r = deepspeed().recognise(*view(dir));
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.step == 100);
  run.land_late_shards();
  BOOST_TEST(deepspeed().recognise(*view(dir)).fingerprint == r.fingerprint);
  const auto second = run.begin_save(200);
  BOOST_TEST(verdict(deepspeed().recognise(*view(second))) == incomplete);
  run.finish_save();
  BOOST_TEST(verdict(deepspeed().recognise(*view(second))) == complete);
  BOOST_TEST(verdict(deepspeed().recognise(*view(dir))) == complete);
  run.write_latest_raw("garbage");
  BOOST_TEST(verdict(deepspeed().recognise(*view(dir))) == incomplete);
}

// ---------------------------------------------------------------------------
// Megatron-LM

memory_view megatron_iteration(std::int64_t iteration, const std::string& tracker) {
  std::string digits = std::to_string(iteration);
  if (digits.size() < 7) digits.insert(0, 7 - digits.size(), '0');
  memory_view v("iter_" + digits);
  v.add("__0_0.distcp", std::string(100, 'd'), 1'000);
  v.add(".metadata", std::string(10, 'm'), 2'000);
  v.add("metadata.json", R"({"sharded_backend": "torch_dist"})", 3'000);
  v.add_sibling("latest_checkpointed_iteration.txt", tracker);
  return v;
}

BOOST_AUTO_TEST_CASE(megatron_tracker_decides) {
  auto r = megatron().recognise(megatron_iteration(1500, "1500"));
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.step == 1500);
  BOOST_TEST(r.completed_at_ns == 3'000);
  BOOST_TEST(!r.metrics.has_value());
  BOOST_TEST(verdict(megatron().recognise(megatron_iteration(1500, "2000\n"))) == complete);
  BOOST_TEST(verdict(megatron().recognise(megatron_iteration(1500, " 0002000 "))) == complete);
  r = megatron().recognise(megatron_iteration(1500, "1499"));
  BOOST_TEST(verdict(r) == incomplete);
  BOOST_TEST(r.problem.empty());
  for (const std::string& junk :
       std::vector<std::string>{"release", "abc", "-1", "1500.0", "1e4", "99999999999999999999",
                                std::string("15\x00"
                                            "00",
                                            5),
                                "0x5dc"}) {
    r = megatron().recognise(megatron_iteration(1500, junk));
    BOOST_TEST(verdict(r) == incomplete, "accepted tracker: " << junk);
    BOOST_TEST(!r.problem.empty(), "no problem for tracker: " << junk);
  }
  BOOST_TEST(verdict(megatron().recognise(megatron_iteration(1500, ""))) == incomplete);
  // metadata.json missing (still writing) or garbage.
  auto v = megatron_iteration(1500, "1500");
  v.remove("metadata.json");
  r = megatron().recognise(v);
  BOOST_TEST(verdict(r) == incomplete);
  BOOST_TEST(!r.problem.empty());
  for (const std::string garbage : {"", "{", "[1, 2]", "null", R"({"a": 1,})"}) {
    auto g = megatron_iteration(1500, "1500");
    g.remove("metadata.json").add("metadata.json", garbage);
    BOOST_TEST(verdict(megatron().recognise(g)) == incomplete,
               "accepted metadata.json: " << garbage);
  }
  // release/.
  memory_view release("release");
  release.add("metadata.json", "{}");
  release.add_sibling("latest_checkpointed_iteration.txt", "release\n");
  r = megatron().recognise(release);
  BOOST_TEST(verdict(r) == complete, r.problem);
  BOOST_TEST(r.step == -1);
  release.remove_sibling("latest_checkpointed_iteration.txt")
      .add_sibling("latest_checkpointed_iteration.txt", "100");
  BOOST_TEST(verdict(megatron().recognise(release)) == incomplete);
  // Legacy format.
  memory_view legacy("iter_0000100");
  legacy.add_dir("mp_rank_00");
  legacy.add("mp_rank_00/model_optim_rng.pt", t::zip_bytes(64), 4'000);
  legacy.add_dir("mp_rank_01");
  legacy.add("mp_rank_01/model_optim_rng.pt", t::zip_bytes(64).substr(0, 90), 4'500);
  legacy.add_sibling("latest_checkpointed_iteration.txt", "100");
  BOOST_TEST(verdict(megatron().recognise(legacy)) == incomplete);
  legacy.remove("mp_rank_01/model_optim_rng.pt")
      .add("mp_rank_01/model_optim_rng.pt", t::zip_bytes(64), 4'500);
  r = megatron().recognise(legacy);
  BOOST_TEST(verdict(r) == complete, r.problem);
  BOOST_TEST(r.completed_at_ns == 4'500);
}

BOOST_AUTO_TEST_CASE(disk_megatron_run) {
  t::temp_dir tmp;
  t::megatron_run run(tmp / "save", {.retain_interval = 1000});
  const auto first = run.begin_save(500);
  BOOST_TEST(first.filename() == "iter_0000500");
  BOOST_TEST(verdict(megatron().recognise(*view(first))) == incomplete);
  BOOST_TEST(run.finish_save().empty());
  auto r = megatron().recognise(*view(first));
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.step == 500);
  run.begin_save(1000);
  const auto deleted = run.finish_save();  // 500 is not a multiple of 1000
  BOOST_TEST_REQUIRE(deleted.size() == 1u);
  BOOST_TEST(deleted[0] == first);
  BOOST_TEST(verdict(megatron().recognise(*view(run.iteration_dir(1000)))) == complete);
  run.write_tracker_raw("not a number");
  BOOST_TEST(verdict(megatron().recognise(*view(run.iteration_dir(1000)))) == incomplete);

  t::megatron_run legacy(tmp / "legacy", {.dist_ckpt = false});
  const auto dir = legacy.save(7);
  r = megatron().recognise(*view(dir));
  BOOST_TEST(verdict(r) == complete, r.problem);
}

// ---------------------------------------------------------------------------
// DCP / torchtitan

BOOST_AUTO_TEST_CASE(dcp_metadata_must_be_newest) {
  memory_view v("step-500");
  v.add("__0_0.distcp", std::string(100, 'a'), 1'000);
  v.add("__1_0.distcp", std::string(100, 'b'), 2'000);
  auto r = dcp().recognise(v);
  BOOST_TEST(verdict(r) == incomplete);
  BOOST_TEST(r.problem.empty());
  v.add(".metadata", std::string(50, 'm'), 3'000);
  r = dcp().recognise(v);
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.step == 500);
  BOOST_TEST(r.completed_at_ns == 3'000);
  // A re-save: new data, the old .metadata still there.
  v.remove("__1_0.distcp").add("__1_0.distcp", std::string(100, 'c'), 4'000);
  r = dcp().recognise(v);
  BOOST_TEST(verdict(r) == incomplete);
  // The same mtime counts as newer (coarse clocks).
  v.remove(".metadata").add(".metadata", std::string(50, 'm'), 4'000);
  BOOST_TEST(verdict(dcp().recognise(v)) == complete);
  memory_view empty_meta("step-5");
  empty_meta.add("__0_0.distcp", "x").add(".metadata", "");
  BOOST_TEST(verdict(dcp().recognise(empty_meta)) == incomplete);
  memory_view no_data("step-5");
  no_data.add(".metadata", "m");
  BOOST_TEST(verdict(dcp().recognise(no_data)) == incomplete);
  memory_view tmp_only("step-5");
  tmp_only.add("__0_0.distcp", "x").add(".metadata.tmp", "m", 9'000);
  BOOST_TEST(verdict(dcp().recognise(tmp_only)) == incomplete);
  // Hugging Face format: the index with its shards.
  memory_view hf_format("step-1000");
  hf_format.add("model-00001-of-00001.safetensors", t::safetensors_bytes());
  BOOST_TEST(verdict(dcp().recognise(hf_format)) == incomplete);
  hf_format.add("model.safetensors.index.json",
                R"({"weight_map": {"a": "model-00001-of-00001.safetensors"}})", 8'000);
  r = dcp().recognise(hf_format);
  BOOST_TEST(verdict(r) == complete, r.problem);
  BOOST_TEST(r.completed_at_ns == 8'000);
  hf_format.remove("model.safetensors.index.json")
      .add("model.safetensors.index.json", "{\"weight_map\": {");
  BOOST_TEST(verdict(dcp().recognise(hf_format)) == incomplete);
}

BOOST_AUTO_TEST_CASE(disk_torchtitan_run) {
  t::temp_dir tmp;
  t::torchtitan_run run(tmp / "outputs", {.keep_latest_k = 2});
  const auto first = run.begin_save(0);
  BOOST_TEST(verdict(dcp().recognise(*view(first))) == incomplete);
  run.finish_save();
  const auto r = dcp().recognise(*view(first));
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.step == 0);
  run.save(500);
  // Saving over step-500 again: stale until its .metadata is renamed in.
  // (Past the filesystem's timestamp granularity, as a real re-save is.)
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  run.begin_save(500);
  BOOST_TEST(verdict(dcp().recognise(*view(run.step_dir(500)))) == incomplete);
  BOOST_TEST(run.finish_save().empty());
  BOOST_TEST(verdict(dcp().recognise(*view(run.step_dir(500)))) == complete);
  const auto purged = run.save(1000).parent_path();
  BOOST_TEST(!fs::exists(first));
  const auto hf_dir = run.save_hf(1500);
  BOOST_TEST(!fs::exists(hf_dir / "sharded"));
  BOOST_TEST(verdict(dcp().recognise(*view(hf_dir))) == complete);
}

// ---------------------------------------------------------------------------
// torchtune's own checkpointers

BOOST_AUTO_TEST_CASE(torchtune_epoch_folders) {
  memory_view v("epoch_2");
  v.add("config.json", "{}");
  auto r = tt_epoch().recognise(v);
  BOOST_TEST(verdict(r) == incomplete);
  BOOST_TEST(r.problem.empty());
  BOOST_TEST(r.epoch == 2);
  v.add("model-00001-of-00002.safetensors", t::safetensors_bytes(), 2'000);
  v.add("model-00002-of-00002.safetensors", t::safetensors_bytes(), 3'000);
  BOOST_TEST(verdict(tt_epoch().recognise(v)) == incomplete);  // the index comes last
  v.add(
      "model.safetensors.index.json",
      R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})",
      4'000);
  r = tt_epoch().recognise(v);
  BOOST_TEST_REQUIRE(verdict(r) == settling, r.problem);
  BOOST_TEST(r.epoch == 2);
  BOOST_TEST(r.step == -1);
  BOOST_TEST(r.completed_at_ns == 4'000);
  BOOST_TEST(!r.metrics.has_value());
  const auto before = r.fingerprint;
  // recipe_state.pt half written, then whole.
  const std::string state = t::zip_bytes(200);
  v.add("recipe_state.pt", state.substr(0, state.size() / 2), 5'000);
  r = tt_epoch().recognise(v);
  BOOST_TEST(verdict(r) == incomplete);
  BOOST_TEST(r.problem.find("recipe_state.pt") != std::string::npos);
  v.remove("recipe_state.pt").add("recipe_state.pt", state, 6'000);
  r = tt_epoch().recognise(v);
  BOOST_TEST(verdict(r) == settling, r.problem);
  BOOST_TEST(r.fingerprint != before);
  BOOST_TEST(r.completed_at_ns == 6'000);

  // LoRA: adapter weights need their config.
  memory_view lora("epoch_0");
  lora.add("adapter_model.pt", t::zip_bytes(64));
  lora.add_dir("adapter_model");
  lora.add("adapter_model.safetensors", t::safetensors_bytes());
  BOOST_TEST(verdict(tt_epoch().recognise(lora)) == incomplete);
  lora.add("adapter_config.json", R"({"r": 8, "lora_alpha")");
  BOOST_TEST(verdict(tt_epoch().recognise(lora)) == incomplete);
  lora.remove("adapter_config.json").add("adapter_config.json", R"({"r": 8})");
  BOOST_TEST(verdict(tt_epoch().recognise(lora)) == settling);
  lora.remove("adapter_model.pt").add("adapter_model.pt", "PK garbage");
  BOOST_TEST(verdict(tt_epoch().recognise(lora)) == incomplete);

  // Async saves: DCP.
  memory_view async("step_300");
  async.add("__0_0.distcp", "d", 1'000);
  BOOST_TEST(verdict(tt_epoch().recognise(async)) == incomplete);
  async.add(".metadata", "m", 2'000);
  r = tt_epoch().recognise(async);
  BOOST_TEST(verdict(r) == complete, r.problem);
  BOOST_TEST(r.step == 300);
  BOOST_TEST(r.epoch == 0);
  memory_view adapter_only("epoch_1");
  adapter_only.add_dir("adapter_model");
  adapter_only.add("adapter_model/__0_0.distcp", "d", 1'000);
  adapter_only.add("adapter_model/.metadata", "m", 500);
  BOOST_TEST(verdict(tt_epoch().recognise(adapter_only)) == incomplete);  // stale
  adapter_only.remove("adapter_model/.metadata").add("adapter_model/.metadata", "m", 1'500);
  BOOST_TEST(verdict(tt_epoch().recognise(adapter_only)) == complete);
}

BOOST_AUTO_TEST_CASE(torchtune_disk_logger_losses) {
  const auto folder = [](const std::string& log_name, const std::string& log) {
    memory_view v("step_30");
    v.add("model.safetensors", t::safetensors_bytes());
    v.add_beside(0, "logs/" + log_name, log);
    return v;
  };
  const std::string text =
      "Step 10 | loss:2.5 lr:2e-05 grad_norm:tensor(0.87, device='cuda:0') \n"
      "Step 20 | loss:tensor(1.75) lr:2e-05 \n"
      "Step 25 | val_loss:1.9 \n"
      "Step 30 | loss:1.5 lr:2e-05 \n"
      "Step 40 | loss:1.25 val_loss:1.1 \n"
      "Step 50 | loss:1.0";  // a line still being written
  auto r = tt_epoch().recognise(folder("log_1717171717.txt", text));
  BOOST_TEST_REQUIRE(verdict(r) == settling, r.problem);
  BOOST_TEST_REQUIRE(r.metrics.has_value());
  BOOST_TEST(r.metrics->train_loss == 1.5);
  BOOST_TEST(r.metrics->validation_loss == 1.9);
  BOOST_TEST(r.metrics->perplexity == std::exp(1.9), tt::tolerance(1e-12));
  // Without a validation loss (what torchtune's recipes log): no metrics.
  const std::string no_val = "Step 10 | loss:2.5 \nStep 30 | loss:1.5 \n";
  r = tt_epoch().recognise(folder("log_1.txt", no_val));
  BOOST_TEST(verdict(r) == settling);
  BOOST_TEST(!r.metrics.has_value());
  BOOST_TEST(r.problem.empty());
  // JSONL; a later run's log (resumed at step 100) is skipped for the older one.
  auto v =
      folder("log_1717171717.jsonl",
             "{\"step\": 30, \"loss\": 1.5, \"val_loss\": 1.25}\n{\"step\": 31, \"loss\": 9}\n");
  v.add_beside(0, "logs/log_1717179999.jsonl",
               "{\"step\": 100, \"loss\": 0.1, \"val_loss\": 0.1}\n");
  r = tt_epoch().recognise(v);
  BOOST_TEST_REQUIRE(r.metrics.has_value());
  BOOST_TEST(r.metrics->train_loss == 1.5);
  BOOST_TEST(r.metrics->validation_loss == 1.25);
  // Garbage logs change nothing.
  for (const std::string& junk : std::vector<std::string>{
           "", "\n\n", "Step x | loss:1 \n", "Step 1 loss:1\n", "{\"step\": \"1\", \"loss\": 1}\n",
           std::string(1000, '\xff') + "\n", "Step 1 | loss:nan val_loss:1.0 \n"}) {
    r = tt_epoch().recognise(folder("log_5.txt", junk));
    BOOST_TEST(verdict(r) == settling);
    BOOST_TEST(!r.metrics.has_value(), "metrics from: " << junk);
  }
  // epoch_<k> folders do not read the log.
  memory_view epoch("epoch_0");
  epoch.add("model.safetensors", t::safetensors_bytes());
  epoch.add_beside(0, "logs/log_1.txt", text);
  BOOST_TEST(!tt_epoch().recognise(epoch).metrics.has_value());
}

BOOST_AUTO_TEST_CASE(disk_torchtune_checkpointer_run) {
  t::temp_dir tmp;
  t::torchtune_checkpointer_run run(tmp / "out", {.lora = true, .keep_last_n = 2});
  run.train_steps(4);
  BOOST_TEST(fs::exists(run.log_file()));
  const auto dir0 = run.begin_save(0);
  BOOST_TEST(w::choose_layout("epoch_0", true, children_of(dir0)) == &tt_epoch());
  auto r = tt_epoch().recognise(*view(dir0));
  BOOST_TEST_REQUIRE(verdict(r) == settling, r.problem);
  BOOST_TEST(r.epoch == 0);
  run.finish_save(true);
  const auto again = tt_epoch().recognise(*view(dir0));
  BOOST_TEST(verdict(again) == settling);
  BOOST_TEST(again.fingerprint != r.fingerprint);
  run.train_steps(4);
  run.save(1, true);
  run.train_steps(4);
  const auto pruned = run.begin_save(2);
  BOOST_TEST(run.finish_save(false).size() == 1u);  // keep_last_n = 2 prunes epoch_0
  BOOST_TEST(!fs::exists(dir0));
  r = tt_epoch().recognise(*view(pruned));
  BOOST_TEST(verdict(r) == settling, r.problem);
  BOOST_TEST(r.epoch == 2);

  t::torchtune_checkpointer_run steps(tmp / "steps", {.dir_prefix = "step", .jsonl_log = true});
  steps.train_steps(6);
  const auto dir = steps.save(6, true);
  BOOST_TEST(dir.filename() == "step_6");
  r = tt_epoch().recognise(*view(dir));
  BOOST_TEST(verdict(r) == settling, r.problem);
  BOOST_TEST(r.step == 6);
  BOOST_TEST(!r.metrics.has_value());  // no validation loss on disk
}

// ---------------------------------------------------------------------------
// Lightning

memory_view ckpt_file(const std::string& name, std::string bytes = t::zip_bytes(64),
                      std::int64_t mtime_ns = 7'000) {
  memory_view v(name, false);
  v.add("", std::move(bytes), mtime_ns);
  return v;
}

BOOST_AUTO_TEST_CASE(lightning_files) {
  auto r = lightning().recognise(ckpt_file("epoch=4-step=1250.ckpt"));
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.epoch == 4);
  BOOST_TEST(r.step == 1250);
  BOOST_TEST(r.completed_at_ns == 7'000);
  BOOST_TEST(!r.metrics.has_value());
  BOOST_TEST(r.problem.empty());

  r = lightning().recognise(ckpt_file("epoch=2-step=750-val_loss=0.41-train_loss=0.38-v1.ckpt"));
  BOOST_TEST_REQUIRE(r.metrics.has_value(), r.problem);
  BOOST_TEST(r.epoch == 2);
  BOOST_TEST(r.step == 750);
  BOOST_TEST(r.metrics->epoch == 2);
  BOOST_TEST(r.metrics->validation_loss == 0.41);
  BOOST_TEST(r.metrics->train_loss == 0.38);
  BOOST_TEST(r.metrics->perplexity == std::exp(0.41), tt::tolerance(1e-12));

  r = lightning().recognise(
      ckpt_file("model-epoch=03-step=0010-lr=1e-05-loss=2.5-validation_loss=2.75.ckpt"));
  BOOST_TEST_REQUIRE(r.metrics.has_value(), r.problem);
  BOOST_TEST(r.epoch == 3);
  BOOST_TEST(r.step == 10);
  BOOST_TEST(r.metrics->train_loss == 2.5);
  BOOST_TEST(r.metrics->validation_loss == 2.75);

  // Non-finite metrics: complete, no metrics, a note.
  r = lightning().recognise(ckpt_file("epoch=1-step=2-val_loss=nan-loss=1.0.ckpt"));
  BOOST_TEST(verdict(r) == complete);
  BOOST_TEST(!r.metrics.has_value());
  BOOST_TEST(!r.problem.empty());

  // Odd names: no fields, junk values, odd bytes.
  for (const std::string& name :
       std::vector<std::string>{"last.ckpt", "best.ckpt", "epoch=x-step=-3.ckpt", "=.ckpt",
                                std::string("epoch=1\xff-step=2.ckpt"), "epoch=1 -step=2.ckpt",
                                "a\nb.ckpt", "epoch=99999999999999999999-step=1.ckpt"}) {
    r = lightning().recognise(ckpt_file(name));
    BOOST_TEST(verdict(r) == complete, name);
    BOOST_TEST(r.epoch >= 0);
  }
  BOOST_TEST(lightning().recognise(ckpt_file("epoch=1 -step=2.ckpt")).step == 2);
  BOOST_TEST(lightning().recognise(ckpt_file("epoch=99999999999999999999-step=1.ckpt")).epoch == 0);

  // Truncated at every length: never complete.
  const std::string bytes = t::zip_bytes(64);
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    r = lightning().recognise(ckpt_file("epoch=0-step=1.ckpt", bytes.substr(0, cut)));
    BOOST_TEST(verdict(r) == incomplete, "cut " << cut);
  }
  // Rewritten in place: a new fingerprint.
  const auto a = lightning().recognise(ckpt_file("last.ckpt", bytes, 1'000));
  const auto b = lightning().recognise(ckpt_file("last.ckpt", bytes, 2'000));
  BOOST_TEST(a.fingerprint != b.fingerprint);
  BOOST_TEST(b.completed_at_ns == 2'000);
}

BOOST_AUTO_TEST_CASE(lightning_metrics_csv) {
  const std::string csv =
      "epoch,step,train_loss_step,train_loss_epoch,val_loss\n"
      "0,49,2.0,,\n"
      "0,99,1.8,,\n"
      "0,99,,1.9,\n"
      "0,99,,,1.75\n"
      "1,149,1.5,,\n"
      "1,199,1.25,,\n"
      "1,199,,1.3,\n"
      "1,199,,,1.5\n"
      "2,249,1.0,,";  // a row still being written
  auto v = ckpt_file("epoch=0-step=100.ckpt");
  v.add_beside(1, "metrics.csv", csv);
  auto r = lightning().recognise(v);
  BOOST_TEST_REQUIRE(r.metrics.has_value(), r.problem);
  BOOST_TEST(r.metrics->train_loss == 1.9);  // the epoch aggregate beats the step value
  BOOST_TEST(r.metrics->validation_loss == 1.75);
  BOOST_TEST(r.metrics->epoch == 0);

  // The name's value wins over the CSV's.
  auto named = ckpt_file("epoch=1-step=200-val_loss=1.45.ckpt");
  named.add_beside(1, "metrics.csv", csv);
  r = lightning().recognise(named);
  BOOST_TEST_REQUIRE(r.metrics.has_value());
  BOOST_TEST(r.metrics->validation_loss == 1.45);
  BOOST_TEST(r.metrics->train_loss == 1.3);

  // last.ckpt: the CSV's newest epoch, no step, no CSV metrics.
  auto last = ckpt_file("last.ckpt");
  last.add_beside(1, "metrics.csv", csv + "\n");
  r = lightning().recognise(last);
  BOOST_TEST(r.epoch == 2);
  BOOST_TEST(r.step == -1);
  BOOST_TEST(!r.metrics.has_value());
  BOOST_TEST(lightning().recognise(ckpt_file("last.ckpt")).epoch == 0);

  // Not CSVLogger's, half rewritten, garbage: no metrics, still complete.
  for (const std::string& bad :
       std::vector<std::string>{"a,b\n1,2\n", "epoch,step,val_loss\n0,99", "", "\n\n\n",
                                "epoch,step,train_loss,val_loss\n0,99,1.0\n0,99,x,y\n",
                                "epoch,step,train_loss,val_loss\n0,-99,1.0,1.0\n",
                                std::string("epoch,step,train_loss,val_loss\n0,99,\xff,1\n")}) {
    auto g = ckpt_file("epoch=0-step=100.ckpt");
    g.add_beside(1, "metrics.csv", bad);
    r = lightning().recognise(g);
    BOOST_TEST(verdict(r) == complete);
    BOOST_TEST(!r.metrics.has_value(), "metrics from: " << bad);
  }
  // Quoted header fields as Python's csv writes them.
  auto quoted = ckpt_file("epoch=0-step=10.ckpt");
  quoted.add_beside(1, "metrics.csv", "\"epoch\",\"step\",\"loss\",\"val_loss\"\n0,10,1.5,1.25\n");
  BOOST_TEST(lightning().recognise(quoted).metrics.has_value());
}

BOOST_AUTO_TEST_CASE(lightning_folders) {
  memory_view ds("epoch=1-step=20.ckpt");
  ds.add_dir("checkpoint");
  ds.add("checkpoint/mp_rank_00_model_states.pt", t::zip_bytes(64), 3'000);
  BOOST_TEST(verdict(lightning().recognise(ds)) == incomplete);
  ds.add("latest", "checkpoint", 4'000);
  auto r = lightning().recognise(ds);
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.epoch == 1);
  BOOST_TEST(r.step == 20);
  BOOST_TEST(r.completed_at_ns == 4'000);
  for (const std::string& junk : std::vector<std::string>{"", "nope", "../checkpoint",
                                                          "checkpoint/x", std::string(5000, 'c')}) {
    memory_view j("epoch=1-step=20.ckpt");
    j.add_dir("checkpoint");
    j.add("checkpoint/mp_rank_00_model_states.pt", t::zip_bytes(64));
    j.add("latest", junk);
    BOOST_TEST(verdict(lightning().recognise(j)) == incomplete, "accepted latest: " << junk);
  }
  memory_view fsdp("epoch=1-step=20.ckpt");
  fsdp.add("__0_0.distcp", "x").add(".metadata", "m");
  BOOST_TEST(verdict(lightning().recognise(fsdp)) == incomplete);
  fsdp.add("meta.pt", t::zip_bytes(32).substr(0, 40));
  BOOST_TEST(verdict(lightning().recognise(fsdp)) == incomplete);
  fsdp.remove("meta.pt").add("meta.pt", t::zip_bytes(32));
  BOOST_TEST(verdict(lightning().recognise(fsdp)) == complete);
}

BOOST_AUTO_TEST_CASE(disk_lightning_run) {
  t::temp_dir tmp;
  t::lightning_run run(tmp / "root", tmp / "stage", {.save_top_k = 2});
  run.log_epoch(0, 50);
  const auto first = run.save(0, 50);
  BOOST_TEST(first.filename() == "epoch=0-step=50-val_loss=" + [] {
    char b[16];
    std::snprintf(b, sizeof b, "%.2f", t::lightning_run::name_val_loss(0));
    return std::string(b);
  }() + ".ckpt");
  auto r = lightning().recognise(*view(first));
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST_REQUIRE(r.metrics.has_value(), r.problem);
  BOOST_TEST(r.metrics->validation_loss == t::lightning_run::name_val_loss(0));
  BOOST_TEST(r.metrics->train_loss == t::fixture_train_loss(50));
  const auto last = run.checkpoints_dir() / "last.ckpt";
  const auto last_before = lightning().recognise(*view(last));
  BOOST_TEST(verdict(last_before) == complete);
  run.log_epoch(1, 100);
  run.save(1, 100);
  run.log_epoch(2, 150);
  run.save(2, 150);
  BOOST_TEST(!fs::exists(first));  // top 2
  const auto last_after = lightning().recognise(*view(last));
  BOOST_TEST(last_after.fingerprint != last_before.fingerprint);
  BOOST_TEST(last_after.epoch == 2);
  const auto copying = run.begin_copy(3, 200);
  BOOST_TEST(verdict(lightning().recognise(*view(copying))) == incomplete);
  run.finish_copy();
  BOOST_TEST(verdict(lightning().recognise(*view(copying))) == complete);
  const auto ds = run.save_deepspeed_folder(4, 250, /*finish=*/false);
  BOOST_TEST(verdict(lightning().recognise(*view(ds))) == incomplete);
  run.save_deepspeed_folder(4, 250);
  BOOST_TEST(verdict(lightning().recognise(*view(ds))) == complete);
  const auto fsdp = run.save_fsdp_folder(5, 300, /*finish=*/false);
  BOOST_TEST(verdict(lightning().recognise(*view(fsdp))) == incomplete);
  run.save_fsdp_folder(5, 300);
  BOOST_TEST(verdict(lightning().recognise(*view(fsdp))) == complete);
}

// ---------------------------------------------------------------------------
// Orbax

BOOST_AUTO_TEST_CASE(orbax_step_folders) {
  // A bare number with anything but Orbax's files: never, and quietly.
  for (const auto& files : std::vector<std::vector<std::string>>{
           {}, {"data.csv"}, {"model.safetensors"}, {"default/"}, {"metrics/metrics"}}) {
    memory_view v("2024");
    for (const auto& f : files) {
      if (f.ends_with("/")) {
        v.add_dir(f.substr(0, f.size() - 1));
      } else {
        v.add(f, "{}");
      }
    }
    const auto r = orbax().recognise(v);
    BOOST_TEST(verdict(r) == incomplete);
    BOOST_TEST(r.problem.empty());
  }
  const std::string committed =
      R"({"item_handlers": {"default": "x"}, "metrics": {"loss": 1.5, "eval_loss": 1.25, "epoch": 3},
          "init_timestamp_nsecs": 1700000000000000000, "commit_timestamp_nsecs": 1700000005000000000})";
  memory_view v("1000");
  v.add_dir("default");
  v.add("default/_METADATA", "{}");
  v.add("_CHECKPOINT_METADATA", committed, 9'000);
  auto r = orbax().recognise(v);
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.step == 1000);
  BOOST_TEST(r.epoch == 3);
  BOOST_TEST(r.completed_at_ns == 1700000005000000000);
  BOOST_TEST_REQUIRE(r.metrics.has_value());
  BOOST_TEST(r.metrics->train_loss == 1.5);
  BOOST_TEST(r.metrics->validation_loss == 1.25);
  BOOST_TEST(r.metrics->epoch == 3);
  // metrics/metrics wins over the metadata's copy.
  v.add_dir("metrics").add("metrics/metrics", R"({"train_loss": 1.0, "val_loss": 0.5})");
  r = orbax().recognise(v);
  BOOST_TEST_REQUIRE(r.metrics.has_value());
  BOOST_TEST(r.metrics->train_loss == 1.0);
  BOOST_TEST(r.metrics->validation_loss == 0.5);

  // CommitFile in progress: metadata without a commit time.
  memory_view commit("step_0000200");
  commit.add("_CHECKPOINT_METADATA",
             R"({"init_timestamp_nsecs": 5, "commit_timestamp_nsecs": null})");
  commit.add_dir("state");
  commit.add("state/_METADATA", "{}");
  r = orbax().recognise(commit);
  BOOST_TEST(verdict(r) == incomplete);
  BOOST_TEST(r.problem.empty());
  BOOST_TEST(r.step == 200);
  commit.add("commit_success.txt", "Checkpoint commit was successful", 12'000);
  r = orbax().recognise(commit);
  BOOST_TEST(verdict(r) == complete, r.problem);
  BOOST_TEST(r.completed_at_ns == 12'000);
  BOOST_TEST(!r.metrics.has_value());

  // Garbage metadata: incomplete with a problem, unless committed by file.
  for (const std::string& garbage : std::vector<std::string>{
           "", "{", "[]", "null", R"({"commit_timestamp_nsecs": "soon"})",
           R"({"commit_timestamp_nsecs": -5})", R"({"commit_timestamp_nsecs": 1.5})",
           std::string("\xff\xfe{}", 4)}) {
    memory_view g("7");
    g.add("_CHECKPOINT_METADATA", garbage);
    BOOST_TEST(verdict(orbax().recognise(g)) == incomplete, "accepted: " << garbage);
    g.add("commit_success.txt", "");
    BOOST_TEST(verdict(orbax().recognise(g)) == complete, "refused with commit file: " << garbage);
  }
  // Metrics with NaN: complete, no metrics.
  memory_view nan_metrics("8");
  nan_metrics.add("_CHECKPOINT_METADATA",
                  R"({"metrics": {"loss": NaN, "val_loss": 1.0}, "commit_timestamp_nsecs": 10})");
  r = orbax().recognise(nan_metrics);
  BOOST_TEST(verdict(r) == complete);
  BOOST_TEST(!r.metrics.has_value());
  // Pre-metadata Orbax: item folders with Orbax's files, settling.
  memory_view legacy("300");
  legacy.add_dir("default");
  legacy.add("default/manifest.ocdbt", "o", 4'000);
  r = orbax().recognise(legacy);
  BOOST_TEST(verdict(r) == settling, r.problem);
  BOOST_TEST(r.completed_at_ns == 4'000);
  // Claimed through the marker under another name: no step.
  memory_view other("checkpoint-x");
  other.add("_CHECKPOINT_METADATA", committed);
  r = orbax().recognise(other);
  BOOST_TEST(verdict(r) == complete);
  BOOST_TEST(r.step == -1);
}

BOOST_AUTO_TEST_CASE(disk_orbax_runs) {
  t::temp_dir tmp;
  t::orbax_run run(tmp / "ckpt", {.max_to_keep = 2});
  const auto staging = run.begin_save(100, {{"loss", 1.5}, {"eval_loss", 1.75}});
  BOOST_TEST(w::is_staging_name(staging.filename().string()));
  BOOST_TEST(!fs::exists(run.step_dir(100)));
  run.finish_save();
  auto r = orbax().recognise(*view(run.step_dir(100)));
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.step == 100);
  BOOST_TEST(r.completed_at_ns == run.commit_timestamp_ns(100));
  BOOST_TEST_REQUIRE(r.metrics.has_value());
  BOOST_TEST(r.metrics->validation_loss == 1.75);
  run.save(200);
  BOOST_TEST(run.save(300).filename() == "300");
  BOOST_TEST(!fs::exists(run.step_dir(100)));

  t::orbax_run gcs(
      tmp / "gcs",
      {.step_prefix = "step", .step_digits = 8, .protocol = t::orbax_protocol::commit_file});
  const auto dir = gcs.begin_save(5);
  BOOST_TEST(dir.filename() == "step_00000005");
  BOOST_TEST(w::choose_layout(dir.filename().string(), true, children_of(dir)) == &orbax());
  BOOST_TEST(verdict(orbax().recognise(*view(dir))) == incomplete);
  gcs.finish_save();
  r = orbax().recognise(*view(dir));
  BOOST_TEST(verdict(r) == complete, r.problem);
  BOOST_TEST(r.step == 5);
}

// ---------------------------------------------------------------------------
// Weak claims: generic names do not hide the checkpoints below them

BOOST_AUTO_TEST_CASE(weak_and_strong_claims) {
  using w::claim;
  BOOST_TEST((w::claim_of("0", true) == claim::weak));  // Orbax, and Hydra's multirun jobs
  BOOST_TEST((w::claim_of("000042", true) == claim::weak));
  BOOST_TEST((w::claim_of("release", true) == claim::weak));  // Megatron
  BOOST_TEST((w::claim_of("checkpoint-100", true) == claim::strong));
  BOOST_TEST((w::claim_of("step_100", true) == claim::strong));  // torchtune wins by name
  BOOST_TEST((w::claim_of("ckpt_100", true) == claim::strong));  // Orbax, but not generic
  BOOST_TEST((w::claim_of("iter_0000100", true) == claim::strong));
  BOOST_TEST((w::claim_of("0", false) == claim::none));  // Orbax claims folders only
  BOOST_TEST((w::claim_of("logs", true) == claim::none));
  BOOST_TEST((w::claim_of("0.orbax-checkpoint-tmp", true) == claim::none));

  for (auto verdict : {w::state::incomplete, w::state::settling, w::state::complete}) {
    BOOST_TEST(w::search_inside(claim::none, verdict));
    BOOST_TEST(!w::search_inside(claim::strong, verdict));
  }
  BOOST_TEST(w::search_inside(claim::weak, w::state::incomplete));
  BOOST_TEST(!w::search_inside(claim::weak, w::state::settling));
  BOOST_TEST(!w::search_inside(claim::weak, w::state::complete));
}

// The engine's decision on real folders: Hydra's multirun job folders "0/"
// and "1/" (Hugging Face runs inside) are searched; Orbax's own step "100/"
// and a Megatron "release/" its tracker names are checkpoints, not searched.
BOOST_AUTO_TEST_CASE(weakly_claimed_folders_searched_unless_their_layouts) {
  t::temp_dir tmp;
  const auto sweep = tmp / "sweep";
  t::hf_run first(sweep / "0", {.steps_per_epoch = 10});
  first.save(100);
  t::hf_run second(sweep / "1", {.steps_per_epoch = 10});
  second.save(100);
  t::orbax_run orbax_steps(sweep / "orbax");
  orbax_steps.save(100);
  t::megatron_run megatron_release(sweep / "megatron");
  megatron_release.save(100);
  fs::rename(megatron_release.iteration_dir(100), sweep / "megatron" / "release");
  megatron_release.write_tracker_raw("release");

  const auto searched = [](const fs::path& folder) {
    const auto name = folder.filename().string();
    const auto* l = w::choose_layout(name, true, children_of(folder));
    BOOST_TEST_REQUIRE(l != nullptr, name);
    return w::search_inside(w::claim_of(name, true), l->recognise(*view(folder)).verdict);
  };
  BOOST_TEST(searched(sweep / "0"));
  BOOST_TEST(searched(sweep / "1"));
  BOOST_TEST(!searched(first.checkpoint_dir(100)));
  BOOST_TEST(!searched(orbax_steps.step_dir(100)));
  BOOST_TEST(!searched(sweep / "megatron" / "release"));
  // Before the tracker says "release", the folder is no checkpoint yet:
  // searched like any other.
  megatron_release.write_tracker_raw("100");
  BOOST_TEST(searched(sweep / "megatron" / "release"));
}

// ---------------------------------------------------------------------------
// NeMo

BOOST_AUTO_TEST_CASE(nemo_checkpoints) {
  const std::string name = "megatron_gpt--val_loss=2.1034-epoch=1-consumed_samples=20480.0";
  memory_view v(name);
  v.add_sibling(name + "-unfinished", "");
  v.add_dir("weights");
  v.add("weights/__0_0.distcp", "d", 1'000);
  v.add("weights/.metadata", "m", 2'000);
  v.add_dir("context");
  v.add("context/io.json", "{}", 3'000);
  auto r = nemo().recognise(v);
  BOOST_TEST(verdict(r) == incomplete);
  BOOST_TEST(r.problem.empty());
  v.remove_sibling(name + "-unfinished");
  r = nemo().recognise(v);
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.epoch == 1);
  BOOST_TEST(r.step == -1);
  BOOST_TEST(r.completed_at_ns == 3'000);
  BOOST_TEST(!r.metrics.has_value());  // no training loss in the name
  v.remove("context/io.json").remove("context");
  r = nemo().recognise(v);
  BOOST_TEST(verdict(r) == incomplete);
  BOOST_TEST(!r.problem.empty());

  memory_view last(name + "-last");
  last.add_dir("weights").add("weights/metadata.json", "{}").add_dir("context");
  last.add_sibling(name + "-unfinished", "");  // another checkpoint's marker
  r = nemo().recognise(last);
  BOOST_TEST(verdict(r) == complete, r.problem);
  BOOST_TEST(r.epoch == 1);
  last.add_sibling(name + "-last-unfinished", "");
  BOOST_TEST(verdict(nemo().recognise(last)) == incomplete);

  // A template with a training loss and a step gives metrics.
  memory_view full("gpt--val_loss=1.25-reduced_train_loss=1.5-step=99-epoch=0-last");
  full.add_dir("weights").add("weights/.metadata", "m").add_dir("context");
  r = nemo().recognise(full);
  BOOST_TEST_REQUIRE(r.metrics.has_value(), r.problem);
  BOOST_TEST(r.step == 99);
  BOOST_TEST(r.metrics->train_loss == 1.5);
  BOOST_TEST(r.metrics->validation_loss == 1.25);
  BOOST_TEST(r.metrics->perplexity == std::exp(1.25), tt::tolerance(1e-12));

  // NeMo 1.x .ckpt files, EMA markers.
  auto ckpt = ckpt_file("gpt--val_loss=0.4567-epoch=3-EMA.ckpt");
  ckpt.add_sibling("gpt--val_loss=0.4567-epoch=3-unfinished", "");
  BOOST_TEST(verdict(nemo().recognise(ckpt)) == incomplete);
  ckpt.remove_sibling("gpt--val_loss=0.4567-epoch=3-unfinished");
  r = nemo().recognise(ckpt);
  BOOST_TEST(verdict(r) == complete, r.problem);
  BOOST_TEST(r.epoch == 3);
  const std::string zip = t::zip_bytes(64);
  BOOST_TEST(verdict(nemo().recognise(
                 ckpt_file("gpt--val_loss=0.4-epoch=3.ckpt", zip.substr(0, 50)))) == incomplete);

  // .nemo tar files: half written, whole, gzip.
  const std::string tar =
      t::tar_bytes({{"./model_config.yaml", "a: 1\n"}, {"./model_weights.ckpt", zip}});
  auto tar_file = ckpt_file("megatron_gpt.nemo", tar.substr(0, 1024));
  BOOST_TEST(verdict(nemo().recognise(tar_file)) == incomplete);
  tar_file = ckpt_file("megatron_gpt.nemo", tar);
  r = nemo().recognise(tar_file);
  BOOST_TEST(verdict(r) == complete, r.problem);
  BOOST_TEST(r.epoch == 0);
  tar_file.add_sibling("megatron_gpt-unfinished", "");
  BOOST_TEST(verdict(nemo().recognise(tar_file)) == incomplete);
  r = nemo().recognise(
      ckpt_file("old.nemo", std::string("\x1f\x8b\x08\x00", 4) + std::string(64, 'z')));
  BOOST_TEST(verdict(r) == settling);
  BOOST_TEST(verdict(nemo().recognise(ckpt_file("x.nemo", std::string(2048, 'x')))) == incomplete);
}

BOOST_AUTO_TEST_CASE(disk_nemo_run) {
  t::temp_dir tmp;
  t::nemo_run run(tmp / "checkpoints", {.save_top_k = 1});
  const auto first = run.begin_save(0, 1024);
  BOOST_TEST(fs::exists(run.marker_of(first)));
  BOOST_TEST(w::choose_layout(first.filename().string(), true, children_of(first)) == &nemo());
  BOOST_TEST(verdict(nemo().recognise(*view(first))) == incomplete);
  BOOST_TEST(run.finish_save().empty());
  BOOST_TEST(!fs::exists(run.marker_of(first)));
  auto r = nemo().recognise(*view(first));
  BOOST_TEST_REQUIRE(verdict(r) == complete, r.problem);
  BOOST_TEST(r.epoch == 0);
  const auto last = fs::path(first.string() + "-last");
  BOOST_TEST(verdict(nemo().recognise(*view(last))) == complete);
  run.begin_save(1, 2048);
  const auto removed = run.finish_save();  // the old -last, then top-1 drops epoch 0
  BOOST_TEST(removed.size() == 2u);
  BOOST_TEST(!fs::exists(first));

  const auto ckpt = run.save_ckpt(2);
  BOOST_TEST(w::choose_layout(ckpt.filename().string(), false, {}) == &nemo());
  r = nemo().recognise(*view(ckpt));
  BOOST_TEST(verdict(r) == complete, r.problem);
  BOOST_TEST(r.epoch == 2);

  const auto nemo_file = run.begin_nemo();
  BOOST_TEST(verdict(nemo().recognise(*view(nemo_file))) == incomplete);
  run.finish_nemo();
  BOOST_TEST(verdict(nemo().recognise(*view(nemo_file))) == complete);
  run.begin_nemo();  // the old one moved aside as a backup (staging)
  BOOST_TEST(fs::exists(nemo_file.parent_path() / "megatron_gpt-v1.nemo"));
  BOOST_TEST(w::is_staging_name("megatron_gpt-v1.nemo"));
  run.finish_nemo();
  BOOST_TEST(!fs::exists(nemo_file.parent_path() / "megatron_gpt-v1.nemo"));
}

// ---------------------------------------------------------------------------
// Files beside a candidate, on disk

BOOST_AUTO_TEST_CASE(disk_view_beside) {
  t::temp_dir tmp;
  const auto run = tmp / "run";
  t::write_file(run / "checkpoints" / "epoch=0-step=1.ckpt", t::zip_bytes(8));
  t::write_file(run / "checkpoints" / "latest", "global_step1");
  t::write_file(run / "metrics.csv", "epoch,step\n");
  t::write_file(run / "logs" / "log_1.txt", "Step 1 | loss:1.0 \n");
  fs::create_directories(run / "logs" / "sub");
  t::write_file(tmp / "secret.txt", "secret");
  fs::create_symlink(tmp / "secret.txt", run / "checkpoints" / "linked");
  fs::create_directory_symlink(tmp.path(), run / "logs-link");
  fs::create_directories(run / "checkpoints" / "global_step1");

  const auto v = view(run / "checkpoints" / "global_step1");
  BOOST_TEST(*v->read_sibling("latest", 100) == "global_step1");
  BOOST_TEST(!v->read_sibling("latest", 5).has_value());  // larger than allowed
  BOOST_TEST(!v->read_sibling("linked", 100).has_value());
  BOOST_TEST(!v->read_sibling("../metrics.csv", 100).has_value());
  BOOST_TEST(!v->read_sibling("..", 100).has_value());
  BOOST_TEST(!v->read_sibling("", 100).has_value());
  BOOST_TEST(v->sibling_exists("latest"));
  BOOST_TEST(v->sibling_exists("linked"));  // it is there, even if never read
  BOOST_TEST(!v->sibling_exists("nope"));
  BOOST_TEST(!v->sibling_exists("../metrics.csv"));

  BOOST_TEST(*v->read_beside(1, "metrics.csv", 0, 100) == "epoch,step\n");
  BOOST_TEST(*v->read_beside(1, "metrics.csv", 6, 100) == "step\n");
  BOOST_TEST(*v->read_beside(1, "logs/log_1.txt", 0, 4) == "Step");
  BOOST_TEST(!v->read_beside(1, "logs-link/secret.txt", 0, 100).has_value());
  BOOST_TEST(!v->read_beside(1, "../secret.txt", 0, 100).has_value());
  BOOST_TEST(!v->read_beside(1, "logs/../metrics.csv", 0, 100).has_value());
  BOOST_TEST(!v->read_beside(1, "/etc/hostname", 0, 100).has_value());
  BOOST_TEST(!v->read_beside(2, "metrics.csv", 0, 100).has_value());
  BOOST_TEST(!v->read_beside(-1, "metrics.csv", 0, 100).has_value());
  BOOST_TEST(!v->read_beside(1, "logs", 0, 100).has_value());
  BOOST_TEST(!v->read_beside(0, "linked", 0, 100).has_value());
  const auto logs = v->list_beside(1, "logs");
  BOOST_TEST_REQUIRE(logs.size() == 2u);
  BOOST_TEST(logs[0].rel == "log_1.txt");
  BOOST_TEST(logs[0].size == 19u);
  BOOST_TEST(logs[1].is_dir);
  std::vector<std::string> names;
  for (const auto& f : v->list_beside(1, "")) names.push_back(f.rel);
  BOOST_TEST(names == (std::vector<std::string>{"checkpoints", "logs", "metrics.csv"}),
             tt::per_element());  // no symlinks
  BOOST_TEST(v->list_beside(1, "logs-link").empty());
  BOOST_TEST(v->list_beside(1, "..").empty());
  BOOST_TEST(v->list_beside(3, "").empty());
  // A file candidate reads beside itself the same way; "a/b/" is b.
  const auto file = view(run / "checkpoints" / "epoch=0-step=1.ckpt");
  BOOST_TEST(*file->read_sibling("latest", 100) == "global_step1");
  BOOST_TEST(file->read_beside(1, "metrics.csv", 0, 5).value_or("") == "epoch");
  const auto slash = w::view_from_disk((run / "checkpoints" / "global_step1").string() + "/");
  BOOST_TEST(*slash->read_sibling("latest", 100) == "global_step1");
}


// ---- worker_pool: the threads that look at candidates ahead of the engine ----

BOOST_AUTO_TEST_CASE(worker_pool_runs_every_job_and_hands_back_results) {
  w::worker_pool pool(3);
  BOOST_TEST(pool.threads() == 3u);
  std::vector<std::future<std::pair<int, std::thread::id>>> results;
  for (int i = 0; i < 200; ++i) {
    results.push_back(pool.submit([i] { return std::make_pair(i * i, std::this_thread::get_id()); }));
  }
  std::set<std::thread::id> threads;
  for (int i = 0; i < 200; ++i) {
    auto [square, thread] = results[static_cast<std::size_t>(i)].get();
    BOOST_TEST(square == i * i);
    BOOST_TEST((thread != std::this_thread::get_id()));
    threads.insert(thread);
  }
  BOOST_TEST(threads.size() >= 1u);
  BOOST_TEST(threads.size() <= 3u);
  BOOST_TEST(w::worker_pool(0).threads() == 1u);  // at least one
}

BOOST_AUTO_TEST_CASE(worker_pool_passes_exceptions_and_drops_unstarted_jobs) {
  std::future<int> thrown;
  std::vector<std::future<int>> queued;
  std::promise<void> release;
  {
    w::worker_pool pool(1);
    thrown = pool.submit([]() -> int { throw std::runtime_error("listing failed"); });
    BOOST_CHECK_THROW(thrown.get(), std::runtime_error);
    // The only thread is held; what is queued behind it never starts.
    auto held = pool.submit([gate = release.get_future().share()] {
      gate.wait();
      return 1;
    });
    for (int i = 0; i < 5; ++i) queued.push_back(pool.submit([] { return 2; }));
    std::thread opener([&release] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      release.set_value();
    });
    BOOST_TEST(held.get() == 1);
    opener.join();
    // Destroyed here: whatever has not started is dropped, and waited for
    // nowhere.
  }
  for (auto& f : queued) {
    BOOST_TEST((f.wait_for(std::chrono::seconds(0)) == std::future_status::ready));
    try {
      BOOST_TEST(f.get() == 2);  // started before the pool went
    } catch (const std::future_error& e) {
      BOOST_TEST((e.code() == std::future_errc::broken_promise));
    }
  }
}


// ---- trainer_state.json read without a document tree ----------------------

// What the Hugging Face layout read from a trainer_state.json when it parsed
// it into boost::json values: read_trainer_state must agree on every input.
w::trainer_state read_through_values(std::string_view text, boost::system::error_code& ec) {
  w::trainer_state out;
  const auto root = w::parse_python_json(text, ec, {});
  if (ec) return out;
  const auto* obj = root.if_object();
  if (!obj) return out;
  out.is_object = true;
  if (const auto* g = obj->if_contains("global_step")) out.global_step = w::json_integer(*g);
  if (const auto* e = obj->if_contains("epoch")) {
    out.has_epoch = true;
    out.epoch_is_null = e->is_null();
    out.epoch = w::json_number(*e);
  }
  if (const auto* h = obj->if_contains("log_history"); h && h->is_array()) {
    out.has_log_history = true;
    for (const auto& v : h->get_array()) {
      const auto* entry = v.if_object();
      if (!entry) continue;
      w::trainer_state::log_entry e;
      if (const auto* st = entry->if_contains("step")) e.step = w::json_integer(*st);
      const auto loss_of = [](const boost::json::value& x) {
        return w::json_number(x).value_or(std::nan(""));
      };
      if (const auto* l = entry->if_contains("loss")) e.loss = loss_of(*l);
      if (const auto* l = entry->if_contains("eval_loss")) e.eval_loss = loss_of(*l);
      out.log_history.push_back(e);
    }
  }
  return out;
}

bool same_number(std::optional<double> a, std::optional<double> b) {
  if (a.has_value() != b.has_value()) return false;
  if (!a) return true;
  return (std::isnan(*a) && std::isnan(*b)) || *a == *b;
}

void check_same_reading(const std::string& text) {
  boost::system::error_code dom_ec;
  boost::system::error_code sax_ec;
  const auto dom = read_through_values(text, dom_ec);
  const auto sax = w::read_trainer_state(text, sax_ec);
  BOOST_TEST_CONTEXT("input: " << text.substr(0, 200)) {
    BOOST_TEST(bool(dom_ec) == bool(sax_ec));
    if (dom_ec || sax_ec) return;
    BOOST_TEST(dom.is_object == sax.is_object);
    BOOST_TEST((dom.global_step == sax.global_step));
    BOOST_TEST(dom.has_epoch == sax.has_epoch);
    BOOST_TEST(dom.epoch_is_null == sax.epoch_is_null);
    BOOST_TEST(same_number(dom.epoch, sax.epoch));
    BOOST_TEST(dom.has_log_history == sax.has_log_history);
    BOOST_REQUIRE(dom.log_history.size() == sax.log_history.size());
    for (std::size_t i = 0; i < dom.log_history.size(); ++i) {
      BOOST_TEST((dom.log_history[i].step == sax.log_history[i].step));
      BOOST_TEST(same_number(dom.log_history[i].loss, sax.log_history[i].loss));
      BOOST_TEST(same_number(dom.log_history[i].eval_loss, sax.log_history[i].eval_loss));
    }
  }
}

BOOST_AUTO_TEST_CASE(trainer_state_reads_as_its_document_tree_would) {
  const std::vector<std::string> cases{
      R"({"global_step": 20, "epoch": 0.4, "log_history": [{"loss": 1.5, "step": 10}, {"eval_loss": 2.5, "step": 20}]})",
      R"({"global_step": 20, "global_step": "20"})",  // the last duplicate wins
      R"({"global_step": "20", "global_step": 20, "epoch": null, "epoch": 3})",
      R"({"epoch": 1, "epoch": null})",
      R"({"epoch": "1"})",
      R"({"epoch": true, "global_step": 1.0})",
      R"({"global_step": 18446744073709551615})",  // uint64, not int64
      R"({"global_step": 9223372036854775807})",
      R"({"global_step": -3, "epoch": -1e308})",
      R"({"global_step": {"global_step": 5}})",
      R"({"nested": {"global_step": 5, "log_history": [{"step": 1, "loss": 1}]}})",
      R"({"log_history": {"step": 1}})",
      R"({"log_history": [1, "x", null, [{"step": 1}], {"step": 2, "loss": NaN}]})",
      R"({"log_history": [{"step": 1, "loss": 1}], "log_history": [{"step": 2, "eval_loss": 2}]})",
      R"({"log_history": [{"step": 1, "loss": 1}], "log_history": 7})",
      R"({"log_history": [{"step": 1, "step": 1.5, "loss": 1, "loss": "x"}]})",
      R"({"log_history": [{"step": 5, "loss": {"value": 1}, "eval_loss": [1], "x": {"loss": 2}}]})",
      R"({"log_history": [{"step": 5, "loss": Infinity, "eval_loss": -Infinity}]})",
      R"({"a": "NaN inside a string", "global_step": 1, "log_history": []})",
      R"({"key with \"quotes\" and \u0041": 1, "global_step": 2})",
      // Keys known only once unescaped, a key that starts with an escape, and
      // escaped keys where nothing is read before a key that is.
      R"({"glob\u0061l_step": 7, "\u0065poch": 2, "log_histor\u0079": [{"st\u0065p": 1, "\u006coss": 3, "eval_los\u0073": 4}]})",
      R"({"a\nb": {"c\u0064": 1, "\u0067lobal_step": 9}, "global_step": 3, "log_history": [{"x\ty": 1, "step": 2}]})",
      R"({"global_steps": 1, "global_ste": 2, "Epoch": 3, "log_history ": [], "log_history": [{"steps": 1, "los": 2, "eval_loss_": 3, "step": 4}]})",
      R"([{"global_step": 1}])",
      R"("global_step")",
      "42",
      "null",
      "{}",
      "",
      "{",
      R"({"global_step": 1} trailing)",
      R"({"global_step": 1}   )",
      R"({"global_step": 1}{"global_step": 2})",
      R"({"global_step": 01})",
      R"({"global_step": NaN})",
      R"({"global_step": 1, /* a comment */ "epoch": 1})",
      std::string(40, '[') + std::string(40, ']'),  // deeper than the parser allows
  };
  for (const auto& text : cases) check_same_reading(text);

  // A real file, and every truncation and single-byte damage of it.
  const t::temp_dir dir;
  t::hf_run run(dir.path() / "job", {.steps_per_epoch = 20, .nan_loss_from_step = 60});
  for (std::int64_t step = 10; step <= 80; step += 10) run.save(step);
  const std::string real = run.trainer_state_json(80);
  check_same_reading(real);
  for (std::size_t n = 0; n < real.size(); n += 7) check_same_reading(real.substr(0, n));
  for (std::size_t at = 0; at < real.size(); at += 5) {
    for (const char ch : {'"', '{', '}', '[', ',', 'N', 'x', '9'}) {
      std::string damaged = real;
      damaged[at] = ch;
      check_same_reading(damaged);
    }
  }
}

// ---- safetensors headers read without a document tree ---------------------

// What safetensors_problem made of a header when it parsed it into boost::json
// values: the problem (after "<file>: "), or else the largest data_offsets
// end. The checks around it (the length field, the file's size) are unchanged.
std::variant<std::string, std::uint64_t> header_through_values(std::string_view header) {
  w::json_arena arena;
  boost::system::error_code ec;
  const auto root = boost::json::parse(header, ec, arena.storage());
  const auto* tensors = ec ? nullptr : root.if_object();
  if (!tensors) return std::string("header is not a JSON object");
  std::uint64_t data_end = 0;
  for (const auto& entry : *tensors) {
    if (entry.key() == "__metadata__") continue;
    const auto* tensor = entry.value().if_object();
    const auto* offsets_value = tensor ? tensor->if_contains("data_offsets") : nullptr;
    const auto* offsets = offsets_value ? offsets_value->if_array() : nullptr;
    const auto bad = [&] {
      return "tensor \"" + std::string(entry.key()) + "\" has no valid data_offsets";
    };
    if (!offsets || offsets->size() != 2) return bad();
    const auto begin = w::json_integer((*offsets)[0]);
    const auto end = w::json_integer((*offsets)[1]);
    if (!begin || !end || *begin < 0 || *end < *begin) return bad();
    data_end = std::max(data_end, static_cast<std::uint64_t>(*end));
  }
  return data_end;
}

// safetensors_problem agrees with the tree on `header` (2 bytes or more): the
// same problem, or a file of exactly the size the tree's data_end gives is
// whole and one byte more is not.
void check_same_header_verdict(std::string_view header) {
  const std::string file = "x.safetensors";
  const auto problem_at_size = [&](std::uint64_t size) {
    memory_view v("c");
    v.add_sized(file, size, safetensors_with_header(header, 0));
    return w::safetensors_problem(v, v.files()[0]);
  };
  const std::uint64_t whole_header = 8 + header.size();
  const auto tree = header_through_values(header);
  BOOST_TEST_CONTEXT("header: " << header.substr(0, 200)) {
    if (const auto* problem = std::get_if<std::string>(&tree)) {
      BOOST_TEST(problem_at_size(whole_header) == file + ": " + *problem);
      return;
    }
    const std::uint64_t data_end = std::get<std::uint64_t>(tree);
    if (data_end > std::numeric_limits<std::uint64_t>::max() - whole_header) {
      BOOST_TEST(problem_at_size(whole_header) == file + ": data_offsets are implausible");
      return;
    }
    const std::uint64_t size = whole_header + data_end;
    BOOST_TEST(problem_at_size(size).empty());
    if (size < std::numeric_limits<std::uint64_t>::max()) {
      BOOST_TEST(problem_at_size(size + 1) == file + ": " + std::to_string(size + 1) +
                                                  " bytes, header promises only " +
                                                  std::to_string(size));
    }
  }
}

std::string header_of(const std::string& safetensors_file) {
  std::uint64_t length = 0;
  for (int i = 0; i < 8; ++i) {
    length |= std::uint64_t{static_cast<unsigned char>(safetensors_file[i])} << (8 * i);
  }
  return safetensors_file.substr(8, length);
}

BOOST_AUTO_TEST_CASE(safetensors_header_reads_as_its_document_tree_would) {
  const std::vector<std::string> cases{
      "{}",
      R"({"__metadata__": {"format": "pt"}})",
      R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
      R"({"a": {"data_offsets": [0, 8]}, "b": {"data_offsets": [8, 24]}, "c": {"data_offsets": [4, 6]}})",
      R"({"t": {"data_offsets": [0, 0]}})",
      R"({"t": {"data_offsets": [8, 0]}})",
      R"({"t": {"data_offsets": [0]}})",
      R"({"t": {"data_offsets": []}})",
      R"({"t": {"data_offsets": [0, 8, 16]}})",
      R"({"t": {"data_offsets": "0-8"}})",
      R"({"t": {"data_offsets": {"0": 8}}})",
      R"({"t": {"data_offsets": null}})",
      R"({"t": {"data_offsets": [-1, 8]}})",
      R"({"t": {"data_offsets": [0, -1]}})",
      R"({"t": {"data_offsets": [-0, 0]}})",
      R"({"t": {"data_offsets": [0.0, 8]}})",
      R"({"t": {"data_offsets": [0, 8.0]}})",
      R"({"t": {"data_offsets": [0, 1e3]}})",
      R"({"t": {"data_offsets": [0, 9223372036854775807]}})",
      R"({"t": {"data_offsets": [0, 9223372036854775808]}})",  // uint64, not int64
      R"({"t": {"data_offsets": [0, 18446744073709551615]}})",
      R"({"t": {"data_offsets": [true, 8]}})",
      R"({"t": {"data_offsets": [null, 8]}})",
      R"({"t": {"data_offsets": ["0", 8]}})",
      R"({"t": {"data_offsets": [[0], 8]}})",
      R"({"t": {"data_offsets": [0, [8]]}})",
      R"({"t": {"data_offsets": [0, {"end": 8}]}})",
      R"({"t": {"data_offsets": [0, 8, [1, 2]]}})",
      R"({"t": {"data_offsets": [[0, 8]]}})",
      R"({"t": [0, 8]})",
      R"({"t": 5})",
      R"({"t": null})",
      R"({"t": {}})",
      R"({"t": {"x": {"data_offsets": [0, 100]}, "data_offsets": [0, 8]}})",
      R"({"t": {"x": {"data_offsets": [0, 100]}}})",
      R"({"t": {"x": [[0, 8]], "y": [{"data_offsets": 1}], "data_offsets": [0, 8]}})",
      // The last of duplicate keys wins, in the place of the first.
      R"({"t": {"data_offsets": [0, 8], "data_offsets": [0, 4]}})",
      R"({"t": {"data_offsets": [0, 8], "data_offsets": 1}})",
      R"({"t": {"data_offsets": 1, "data_offsets": [0, 8]}})",
      R"({"t": {"data_offsets": [0, 8]}, "t": {"data_offsets": [0, 4]}})",
      R"({"t": {"data_offsets": [0, 8]}, "t": 1})",
      R"({"t": 1, "t": {"data_offsets": [0, 8]}})",
      R"({"a": {"data_offsets": [0, 8]}, "b": 1, "a": 2})",
      R"({"b": 1, "a": {"data_offsets": [0, 8]}, "b": {"data_offsets": [0, 2]}})",
      R"({"a": 1, "b": 2, "a": 3, "b": {"data_offsets": [0, 2]}, "a": {"data_offsets": [0, 9]}})",
      R"({"b": 1, "a": 2, "c": {"data_offsets": [0, 2]}, "a": {"data_offsets": [0, 9]}, "b": 4})",
      // Escapes: names are compared and reported unescaped.
      R"({"\u0074": {"data_offsets": [0, 8]}, "t": 1})",
      R"({"t\"q": 1})",
      R"({"\u00e9t\u00e9": {"data_offsets": [0]}})",
      R"({"t": {"data_\u006ffsets": [0, 8]}})",
      R"({"__meta\u0064ata__": {"data_offsets": 1}, "t": {"data_offsets": [0, 2]}})",
      R"({"__metadata__": 5, "__metadata__": [1], "t": {"data_offsets": [0, 8]}})",
      R"({"__metadata__": {"data_offsets": [0, 99]}})",
      R"({"": {"data_offsets": [0, 3]}})",
      // Not a JSON object, or not JSON.
      R"([{"t": {"data_offsets": [0, 8]}}])",
      R"("t")",
      "42",
      "null",
      "{ ",
      R"({"t": })",
      R"({"t": {"data_offsets": [0, 8]}},)",
      R"({"t": {"data_offsets": [0, 8]}} x)",
      R"({"t": {"data_offsets": [0, 8]}}{})",
      R"({"t": {"data_offsets": [0, 8]}}     )",
      "{\"t\": {\"data_offsets\": [0, 8]}}  \n\t",
      R"({/* a comment */ "t": {"data_offsets": [0, 8]}})",
      R"({"t": {"data_offsets": [0, 8],}})",
      R"({"t": {"data_offsets": [NaN, 8]}})",
      R"({"t": {"data_offsets": [0, 08]}})",
      "{\"t\xff\": {\"data_offsets\": [0, 8]}}",  // not UTF-8
      R"({"t": {"x": )" + std::string(40, '[') + std::string(40, ']') + "}}",
      R"({"t": {"x": )" + std::string(28, '[') + std::string(28, ']') +
          R"(, "data_offsets": [0, 8]}})",
  };
  for (const auto& header : cases) check_same_header_verdict(header);

  // Every truncation and random damage of a few real headers.
  const std::vector<std::string> headers{
      header_of(t::safetensors_bytes(3, 5)),
      header_of(t::safetensors_bytes(1, 1)),
      R"({"__metadata__":{"format":"pt","n\u00e9":"\u0041"},"b":{"dtype":"F16","shape":[2,3],"data_offsets":[12,24]},"a\"b":{"dtype":"F16","shape":[6],"data_offsets":[0,12]}})",
  };
  std::mt19937 random(1677);
  constexpr std::string_view damage = "\"{}[],:-0123456789.eEtn\\u x\x01\xc3";
  for (const auto& header : headers) {
    check_same_header_verdict(header);
    for (std::size_t n = 2; n < header.size(); ++n) check_same_header_verdict(header.substr(0, n));
    for (int round = 0; round < 3000; ++round) {
      std::string damaged = header;
      const int bytes = 1 + static_cast<int>(random() % 3);
      for (int b = 0; b < bytes; ++b) {
        damaged[random() % damaged.size()] = damage[random() % damage.size()];
      }
      check_same_header_verdict(damaged);
    }
  }

  // A model's header, past the first 64 KiB read; and every 97th truncation.
  const std::string large = header_of(t::safetensors_bytes(1500, 1));
  BOOST_TEST_REQUIRE(large.size() > 64u * 1024);
  check_same_header_verdict(large);
  for (std::size_t n = 2; n < large.size(); n += 97) check_same_header_verdict(large.substr(0, n));
}

BOOST_AUTO_TEST_SUITE_END()
