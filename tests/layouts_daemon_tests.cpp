// Black-box tests of the real ckptd binary, one scenario per trainer layout
// beyond Hugging Face, llama-stack torchtune and the manifest (those have
// theirs in daemon_tests.cpp). Each scenario writes a run the way its trainer
// does (tests/support/fixtures.hpp) and checks, through the HTTP API:
//  - nothing is reported while a checkpoint is being written;
//  - once complete it is reported with the right epoch, step-derived name
//    and metrics;
//  - rotation (the trainer deleting old checkpoints) and moves of folders
//    are reflected.
// Each scenario runs twice: with inotify, and with polling every 0.2 s.

#include "support/api_views.hpp"
#include "support/daemon_process.hpp"
#include "support/fixtures.hpp"
#include "support/http_client.hpp"

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <thread>

namespace json = boost::json;
namespace fs = std::filesystem;
using namespace ckptd::test;
using namespace std::chrono_literals;

namespace {

using mode_args = std::vector<std::string>;
const mode_args inotify_mode = {"--watch-mode", "inotify"};
const mode_args poll_mode = {"--watch-mode", "poll", "--poll-interval", "0.2"};

// Long enough for two polls and the settle time to pass: what "not reported
// while writing" waits before looking.
constexpr auto writing_pause = 600ms;
// The bound on any single wait for the daemon to catch up.
constexpr auto catch_up = 8s;

std::optional<json::object> find(const json::array& checkpoints, const std::string& id) {
  for (auto& c : checkpoints) {
    if (c.as_object().at("identifier").as_string() == id) return c.as_object();
  }
  return std::nullopt;
}

// A daemon watching dir/runs, with a private index, started and ready.
struct watched_daemon {
  watched_daemon(const temp_dir& dir, const mode_args& mode)
      : process([&] {
          std::vector<std::string> args{
              "--watch", (dir / "runs").string(), "--db", (dir / "db").string(), "--settle-time",
              "0.5",     "--rate-limit",          "0",    "--log-level",         "debug"};
          args.insert(args.end(), mode.begin(), mode.end());
          return args;
        }()) {
    BOOST_REQUIRE_MESSAGE(eventually([&] { return get(port(), "/readyz").status == 200; }),
                          process.log());
  }
  std::uint16_t port() const { return process.port(); }
  // Waits until the job lists exactly `ids` (sorted or not).
  bool lists(const std::string& job, std::vector<std::string> ids) {
    std::sort(ids.begin(), ids.end());
    return eventually(
        [&] {
          auto listed = identifiers(checkpoints_of(port(), job));
          std::sort(listed.begin(), listed.end());
          return listed == ids;
        },
        catch_up);
  }
  // After writing_pause, the job does not list `id`.
  bool never_lists(const std::string& job, const std::string& id) {
    std::this_thread::sleep_for(writing_pause);
    return !find(checkpoints_of(port(), job), id).has_value();
  }
  json::object checkpoint(const std::string& job, const std::string& id) {
    auto c = find(checkpoints_of(port(), job), id);
    BOOST_REQUIRE_MESSAGE(c.has_value(), id << " not listed; log:\n" << process.log());
    return *c;
  }
  daemon_process process;
};

// The list and the daemon's log, for failure messages.
std::string listing(watched_daemon& d, const std::string& job) {
  return json::serialize(checkpoints_of(d.port(), job)) + "\ndaemon log:\n" + d.process.log();
}

void check_metrics(const json::object& c, std::int64_t epoch, double train, double validation) {
  BOOST_TEST(c.at("epoch").as_int64() == epoch);
  BOOST_TEST_REQUIRE(c.contains("training_metrics"), json::serialize(c));
  const auto& m = c.at("training_metrics").as_object();
  BOOST_TEST(m.at("epoch").as_int64() == epoch);
  BOOST_TEST(m.at("train_loss").to_number<double>() == train, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(m.at("validation_loss").to_number<double>() == validation,
             boost::test_tools::tolerance(1e-9));
  BOOST_TEST(m.at("perplexity").to_number<double>() == std::exp(validation),
             boost::test_tools::tolerance(1e-9));
}

std::string path_of(const json::object& c) { return std::string(c.at("path").as_string()); }

// ---------------------------------------------------------------------------
// Scenarios

void torchtune_epochs(const mode_args& mode) {
  temp_dir dir;
  const auto out = dir / "runs" / "tt";
  fs::create_directories(out);
  watched_daemon d(dir, mode);
  torchtune_checkpointer_run run(out, {.lora = true, .keep_last_n = 2});
  run.train_steps(4);
  run.begin_save(0);
  // No marker: the weights are there but recipe_state.pt is not yet, and the
  // quiet time has not passed.
  BOOST_TEST(checkpoints_of(d.port(), "tt").empty());
  run.finish_save(/*intermediate=*/true);
  BOOST_TEST_REQUIRE(d.lists("tt", {"epoch_0"}), listing(d, "tt"));
  auto c = d.checkpoint("tt", "epoch_0");
  BOOST_TEST(c.at("epoch").as_int64() == 0);
  BOOST_TEST(!c.contains("training_metrics"));  // no validation loss on disk
  for (std::int64_t k = 1; k <= 2; ++k) {
    run.train_steps(4);
    run.save(k, /*intermediate=*/k < 2);
  }
  // keep_last_n = 2 pruned epoch_0.
  BOOST_TEST_REQUIRE(d.lists("tt", {"epoch_1", "epoch_2"}), listing(d, "tt"));
  BOOST_TEST(d.checkpoint("tt", "epoch_2").at("epoch").as_int64() == 2);
  // A move into a sub-folder: reported at its new path.
  fs::create_directories(out / "archive");
  fs::rename(run.checkpoint_dir(1), out / "archive" / "epoch_1");
  BOOST_TEST_REQUIRE(eventually(
      [&] {
        auto list = checkpoints_of(d.port(), "tt");
        auto moved = find(list, "epoch_1");
        return list.size() == 2u && moved && path_of(*moved).ends_with("/archive/epoch_1");
      },
      catch_up));
  BOOST_TEST(d.process.stop() == 0);
}

void lightning_checkpoints(const mode_args& mode) {
  temp_dir dir;
  const auto job = dir / "runs" / "pl";
  fs::create_directories(job);
  watched_daemon d(dir, mode);
  lightning_run run(job, dir / "stage", {.save_top_k = 1});
  // A copy from another filesystem: the file grows under its final name.
  run.log_epoch(0, 50);
  const auto first = run.begin_copy(0, 50);
  const auto first_id = first.filename().string();
  BOOST_TEST(d.never_lists("pl", first_id));
  run.finish_copy();
  BOOST_TEST_REQUIRE(d.lists("pl", {first_id}), listing(d, "pl"));
  check_metrics(d.checkpoint("pl", first_id), 0, fixture_train_loss(50),
                lightning_run::name_val_loss(0));

  // Saves with top-1 rotation and last.ckpt, renamed into place.
  run.log_epoch(1, 100);
  const auto second = run.save(1, 100);
  BOOST_TEST(!fs::exists(first));
  BOOST_TEST_REQUIRE(d.lists("pl", {second.filename().string(), "last.ckpt"}), listing(d, "pl"));
  auto c = d.checkpoint("pl", second.filename().string());
  BOOST_TEST(c.at("epoch").as_int64() == 1);
  check_metrics(c, 1, fixture_train_loss(100), lightning_run::name_val_loss(1));
  const auto last_created =
      std::string(d.checkpoint("pl", "last.ckpt").at("created_at").as_string());
  BOOST_TEST(d.checkpoint("pl", "last.ckpt").at("epoch").as_int64() == 1);  // from metrics.csv

  std::this_thread::sleep_for(20ms);  // past the filesystem's timestamp granularity
  run.log_epoch(2, 150);
  const auto third = run.save(2, 150);
  BOOST_TEST_REQUIRE(d.lists("pl", {third.filename().string(), "last.ckpt"}), listing(d, "pl"));
  // last.ckpt rewritten: a fresh created_at, the new epoch.
  BOOST_TEST(eventually(
      [&] {
        auto last = d.checkpoint("pl", "last.ckpt");
        return std::string(last.at("created_at").as_string()) != last_created &&
               last.at("epoch").as_int64() == 2;
      },
      catch_up));

  // A DeepSpeed-strategy folder checkpoint, complete only with its latest.
  const auto ds = run.save_deepspeed_folder(3, 200, /*finish=*/false);
  BOOST_TEST(d.never_lists("pl", ds.filename().string()));
  run.save_deepspeed_folder(3, 200);
  BOOST_TEST(d.lists("pl", {third.filename().string(), "last.ckpt", ds.filename().string()}));

  // The whole version folder moved: everything re-reported at the new path.
  fs::rename(run.version_dir(), run.version_dir().parent_path() / "version_1");
  BOOST_TEST(eventually(
                 [&] {
                   auto list = checkpoints_of(d.port(), "pl");
                   return list.size() == 3u &&
                          std::all_of(list.begin(), list.end(), [](const json::value& v) {
                            return path_of(v.as_object()).find("/version_1/checkpoints/") !=
                                   std::string::npos;
                          });
                 },
                 catch_up),
             listing(d, "pl"));
  BOOST_TEST(d.process.stop() == 0);
}

void deepspeed_tags(const mode_args& mode) {
  temp_dir dir;
  const auto job = dir / "runs" / "ds";
  fs::create_directories(job);
  watched_daemon d(dir, mode);
  deepspeed_run run(job / "engine", {.data_parallel_ranks = 2, .late_last_rank = true});
  run.begin_save(100);
  BOOST_TEST(d.never_lists("ds", "global_step100"));
  run.finish_save();  // latest names it
  BOOST_TEST_REQUIRE(d.lists("ds", {"global_step100"}), listing(d, "ds"));
  auto c = d.checkpoint("ds", "global_step100");
  BOOST_TEST(c.at("epoch").as_int64() == 0);
  BOOST_TEST(!c.contains("training_metrics"));
  const auto created = std::string(c.at("created_at").as_string());
  run.land_late_shards();  // refreshes, does not re-create
  run.begin_save(200);
  BOOST_TEST(d.never_lists("ds", "global_step200"));
  run.finish_save();
  BOOST_TEST_REQUIRE(d.lists("ds", {"global_step100", "global_step200"}), listing(d, "ds"));
  BOOST_TEST(std::string(d.checkpoint("ds", "global_step100").at("created_at").as_string()) ==
             created);
  // A caller's rotation deletes a whole tag.
  remove_tree(run.tag_dir(100));
  BOOST_TEST(d.lists("ds", {"global_step200"}), listing(d, "ds"));
  // The save folder moved, latest with it.
  fs::rename(job / "engine", job / "engine-moved");
  BOOST_TEST(eventually(
                 [&] {
                   auto list = checkpoints_of(d.port(), "ds");
                   return list.size() == 1u &&
                          path_of(list[0].as_object()).find("/engine-moved/") != std::string::npos;
                 },
                 catch_up),
             listing(d, "ds"));
  BOOST_TEST(d.process.stop() == 0);
}

void megatron_iterations(const mode_args& mode) {
  temp_dir dir;
  const auto job = dir / "runs" / "mg";
  fs::create_directories(job);
  watched_daemon d(dir, mode);
  megatron_run run(job / "save", {.retain_interval = 1000});
  run.begin_save(500);
  BOOST_TEST(d.never_lists("mg", "iter_0000500"));
  run.finish_save();
  BOOST_TEST_REQUIRE(d.lists("mg", {"iter_0000500"}), listing(d, "mg"));
  BOOST_TEST(d.checkpoint("mg", "iter_0000500").at("epoch").as_int64() == 0);
  run.begin_save(1000);
  BOOST_TEST(d.never_lists("mg", "iter_0001000"));
  run.finish_save();  // retention deletes iter_0000500 (not a multiple of 1000)
  BOOST_TEST_REQUIRE(d.lists("mg", {"iter_0001000"}), listing(d, "mg"));
  run.save(1500);  // 1000 is kept
  BOOST_TEST_REQUIRE(d.lists("mg", {"iter_0001000", "iter_0001500"}), listing(d, "mg"));
  // A junk tracker makes no iteration provably complete.
  run.write_tracker_raw("garbage");
  BOOST_TEST(d.lists("mg", {}), listing(d, "mg"));
  run.write_tracker_raw("1500\n");
  BOOST_TEST(d.lists("mg", {"iter_0001000", "iter_0001500"}), listing(d, "mg"));
  fs::rename(job / "save", job / "save-moved");
  BOOST_TEST(eventually(
                 [&] {
                   auto list = checkpoints_of(d.port(), "mg");
                   return list.size() == 2u &&
                          path_of(list[0].as_object()).find("/save-moved/") != std::string::npos;
                 },
                 catch_up),
             listing(d, "mg"));
  BOOST_TEST(d.process.stop() == 0);
}

void torchtitan_steps(const mode_args& mode) {
  temp_dir dir;
  const auto job = dir / "runs" / "titan";
  fs::create_directories(job);
  watched_daemon d(dir, mode);
  torchtitan_run run(job / "outputs", {.keep_latest_k = 2});
  run.begin_save(0);
  BOOST_TEST(d.never_lists("titan", "step-0"));
  run.finish_save();
  BOOST_TEST_REQUIRE(d.lists("titan", {"step-0"}), listing(d, "titan"));
  run.save(500);
  run.save(1000);  // keep_latest_k = 2 purges step-0
  BOOST_TEST_REQUIRE(d.lists("titan", {"step-500", "step-1000"}), listing(d, "titan"));
  // A re-save into step-1000: gone while its data is newer than .metadata.
  std::this_thread::sleep_for(20ms);
  run.begin_save(1000);
  BOOST_TEST(d.lists("titan", {"step-500"}), listing(d, "titan"));
  run.finish_save();
  BOOST_TEST(d.lists("titan", {"step-500", "step-1000"}), listing(d, "titan"));
  run.save_hf(1500);
  BOOST_TEST(d.lists("titan", {"step-500", "step-1000", "step-1500"}), listing(d, "titan"));
  fs::rename(job / "outputs", job / "outputs-moved");
  BOOST_TEST(eventually(
                 [&] {
                   auto list = checkpoints_of(d.port(), "titan");
                   return list.size() == 3u &&
                          path_of(list[0].as_object()).find("/outputs-moved/") != std::string::npos;
                 },
                 catch_up),
             listing(d, "titan"));
  BOOST_TEST(d.process.stop() == 0);
}

void orbax_steps(const mode_args& mode) {
  temp_dir dir;
  const auto job = dir / "runs" / "jax";
  fs::create_directories(job);
  // A plain numeric folder with other content: never a checkpoint.
  write_file(job / "2024" / "notes.txt", "not a checkpoint");
  watched_daemon d(dir, mode);
  orbax_run run(job / "ckpt", {.max_to_keep = 2});
  run.begin_save(100, {{"loss", 1.5}, {"eval_loss", 1.25}, {"epoch", 1}});
  BOOST_TEST(d.never_lists("jax", "100"));
  run.finish_save();  // renamed into place
  BOOST_TEST_REQUIRE(d.lists("jax", {"100"}), listing(d, "jax"));
  check_metrics(d.checkpoint("jax", "100"), 1, 1.5, 1.25);
  run.save(200, {{"loss", 1.0}, {"eval_loss", 1.125}, {"epoch", 2}});
  run.save(300);  // max_to_keep = 2 removes 100
  BOOST_TEST_REQUIRE(d.lists("jax", {"200", "300"}), listing(d, "jax"));
  BOOST_TEST(!d.checkpoint("jax", "300").contains("training_metrics"));

  // CommitFile protocol: written in place, complete with commit_success.txt.
  orbax_run gcs(job / "gcs", {.step_prefix = "step", .protocol = orbax_protocol::commit_file});
  gcs.begin_save(7);
  BOOST_TEST(d.never_lists("jax", "step_7"));
  gcs.finish_save();
  BOOST_TEST_REQUIRE(d.lists("jax", {"200", "300", "step_7"}), listing(d, "jax"));
  fs::rename(job / "ckpt", job / "ckpt-moved");
  BOOST_TEST(eventually(
                 [&] {
                   auto list = checkpoints_of(d.port(), "jax");
                   auto moved = find(list, "300");
                   return list.size() == 3u && moved &&
                          path_of(*moved).find("/ckpt-moved/") != std::string::npos;
                 },
                 catch_up),
             listing(d, "jax"));
  BOOST_TEST(!find(checkpoints_of(d.port(), "jax"), "2024").has_value());
  BOOST_TEST(d.process.stop() == 0);
}

// Hydra multirun: "<job>/0/", "<job>/1/", ... each hold a Hugging Face run.
// A bare number is also an Orbax step name, a weak claim: the folders are
// searched, since Orbax does not find them its own, while a real Orbax
// run's steps beside them stay Orbax checkpoints.
void hydra_multirun(const mode_args& mode) {
  temp_dir dir;
  const auto job = dir / "runs" / "sweep";
  hf_run first(job / "0", {.steps_per_epoch = 10});
  first.save(100);
  orbax_run orbax(job / "orbax");
  orbax.save(100);
  watched_daemon d(dir, mode);
  BOOST_TEST_REQUIRE(d.lists("sweep", {"checkpoint-100", "100"}), listing(d, "sweep"));
  BOOST_TEST(path_of(d.checkpoint("sweep", "checkpoint-100")) ==
             first.checkpoint_dir(100).string());

  // The sweep's next job starts while ckptd runs.
  hf_run second(job / "1", {.steps_per_epoch = 10});
  second.begin_save(100);
  std::this_thread::sleep_for(writing_pause);
  BOOST_TEST(checkpoints_of(d.port(), "sweep").size() == 2u, listing(d, "sweep"));
  second.finish_save();
  first.save(200);
  orbax.save(200);
  BOOST_TEST_REQUIRE(
      d.lists("sweep", {"checkpoint-100", "checkpoint-100", "checkpoint-200", "100", "200"}),
      listing(d, "sweep"));
  std::vector<std::string> paths;
  for (const auto& c : checkpoints_of(d.port(), "sweep")) paths.push_back(path_of(c.as_object()));
  std::sort(paths.begin(), paths.end());
  std::vector<std::string> expected{first.checkpoint_dir(100).string(),
                                    first.checkpoint_dir(200).string(),
                                    second.checkpoint_dir(100).string(),
                                    orbax.step_dir(100).string(), orbax.step_dir(200).string()};
  std::sort(expected.begin(), expected.end());
  BOOST_TEST(paths == expected, listing(d, "sweep"));
  // Rotation inside a searched folder is followed too.
  remove_tree(first.checkpoint_dir(100));
  BOOST_TEST(d.lists("sweep", {"checkpoint-100", "checkpoint-200", "100", "200"}),
             listing(d, "sweep"));
  BOOST_TEST(d.process.stop() == 0);
}

void nemo_checkpoints(const mode_args& mode) {
  temp_dir dir;
  const auto job = dir / "runs" / "nemo";
  fs::create_directories(job);
  watched_daemon d(dir, mode);
  nemo_run run(job / "checkpoints", {.save_top_k = 1});
  const auto first = run.begin_save(0, 1024);
  const auto first_id = first.filename().string();
  BOOST_TEST(d.never_lists("nemo", first_id));  // its -unfinished marker is there
  run.finish_save();
  BOOST_TEST_REQUIRE(d.lists("nemo", {first_id, first_id + "-last"}), listing(d, "nemo"));
  auto c = d.checkpoint("nemo", first_id);
  BOOST_TEST(c.at("epoch").as_int64() == 0);
  BOOST_TEST(!c.contains("training_metrics"));  // a validation loss only

  const auto second = run.begin_save(1, 2048);
  BOOST_TEST(d.never_lists("nemo", second.filename().string()));
  run.finish_save();  // the new -last replaces the old, top-1 removes epoch 0
  const auto second_id = second.filename().string();
  BOOST_TEST_REQUIRE(d.lists("nemo", {second_id, second_id + "-last"}), listing(d, "nemo"));
  BOOST_TEST(d.checkpoint("nemo", second_id).at("epoch").as_int64() == 1);

  // .nemo: written straight to its name, the previous one backed up as -v1.
  const auto nemo_file = run.begin_nemo();
  BOOST_TEST(d.never_lists("nemo", nemo_file.filename().string()));
  run.finish_nemo();
  BOOST_TEST_REQUIRE(d.lists("nemo", {second_id, second_id + "-last", "megatron_gpt.nemo"}),
                     listing(d, "nemo"));
  run.begin_nemo();
  run.finish_nemo();
  BOOST_TEST(d.lists("nemo", {second_id, second_id + "-last", "megatron_gpt.nemo"}),
             listing(d, "nemo"));
  // NeMo 1.x .ckpt files.
  const auto ckpt = run.save_ckpt(2);
  BOOST_TEST(d.lists("nemo", {second_id, second_id + "-last", "megatron_gpt.nemo",
                              ckpt.filename().string()}),
             listing(d, "nemo"));
  BOOST_TEST(d.checkpoint("nemo", ckpt.filename().string()).at("epoch").as_int64() == 2);
  fs::rename(job / "checkpoints", job / "checkpoints-moved");
  BOOST_TEST(eventually(
                 [&] {
                   auto list = checkpoints_of(d.port(), "nemo");
                   return list.size() == 4u &&
                          std::all_of(list.begin(), list.end(), [](const json::value& v) {
                            return path_of(v.as_object()).find("/checkpoints-moved/") !=
                                   std::string::npos;
                          });
                 },
                 catch_up),
             listing(d, "nemo"));
  BOOST_TEST(d.process.stop() == 0);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(layouts_daemon_tests)

BOOST_AUTO_TEST_CASE(torchtune_epochs_inotify) { torchtune_epochs(inotify_mode); }
BOOST_AUTO_TEST_CASE(torchtune_epochs_polling) { torchtune_epochs(poll_mode); }
BOOST_AUTO_TEST_CASE(lightning_inotify) { lightning_checkpoints(inotify_mode); }
BOOST_AUTO_TEST_CASE(lightning_polling) { lightning_checkpoints(poll_mode); }
BOOST_AUTO_TEST_CASE(deepspeed_inotify) { deepspeed_tags(inotify_mode); }
BOOST_AUTO_TEST_CASE(deepspeed_polling) { deepspeed_tags(poll_mode); }
BOOST_AUTO_TEST_CASE(megatron_inotify) { megatron_iterations(inotify_mode); }
BOOST_AUTO_TEST_CASE(megatron_polling) { megatron_iterations(poll_mode); }
BOOST_AUTO_TEST_CASE(torchtitan_inotify) { torchtitan_steps(inotify_mode); }
BOOST_AUTO_TEST_CASE(torchtitan_polling) { torchtitan_steps(poll_mode); }
BOOST_AUTO_TEST_CASE(orbax_inotify) { orbax_steps(inotify_mode); }
BOOST_AUTO_TEST_CASE(orbax_polling) { orbax_steps(poll_mode); }
BOOST_AUTO_TEST_CASE(nemo_inotify) { nemo_checkpoints(inotify_mode); }
BOOST_AUTO_TEST_CASE(nemo_polling) { nemo_checkpoints(poll_mode); }
BOOST_AUTO_TEST_CASE(hydra_multirun_inotify) { hydra_multirun(inotify_mode); }
BOOST_AUTO_TEST_CASE(hydra_multirun_polling) { hydra_multirun(poll_mode); }

BOOST_AUTO_TEST_SUITE_END()
