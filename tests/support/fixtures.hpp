#pragma once
// ckptd::test fixtures: realistic trainer output on disk, for the watcher's
// unit tests and for black-box tests of the real daemon.
//
// Each generator writes the files IN THE ORDER THE REAL TRAINER WRITES THEM
// (see /work/shared/reference/checkpoint-layouts.md), each one with
// write_file (open, write, close), so an inotify watcher sees the same
// IN_CREATE / IN_CLOSE_WRITE sequence as with the real trainer. Weight files
// are tiny but valid: safetensors files pass the size rule and torch.save
// files are real ZIP archives.
//
// Loss values are deterministic functions of the step, so tests can assert
// exact metrics (compare with a small tolerance: JSON text round trips).
//
// Errors (a file that cannot be written, misuse such as finishing a save that
// was never begun) throw std::runtime_error or std::logic_error: these are
// test helpers. Not thread-safe: one run object per thread.

#include <boost/json/value.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ckptd::test {

// ---------------------------------------------------------------------------
// Files and bytes

// Writes `bytes` to `path` (creating missing parent folders, replacing the
// file), then closes it: one IN_CLOSE_WRITE.
void write_file(const std::filesystem::path& path, std::string_view bytes);

// Sets a file's or folder's modification time (ns since the Unix epoch)
// without following symlinks.
void set_mtime(const std::filesystem::path& path, std::int64_t mtime_ns);

// Deletes a tree like Python's shutil.rmtree: the files one by one, then each
// folder once empty, deepest first. Missing paths are ignored.
void remove_tree(const std::filesystem::path& path);

// A valid safetensors file: `tensors` F32 tensors of `floats_per_tensor`
// values each, header padded with spaces to 8 bytes as the reference writer
// does. Its size is exactly 8 + header + data.
std::string safetensors_bytes(std::size_t tensors = 2, std::size_t floats_per_tensor = 8);

// A valid ZIP archive shaped like torch.save's output (stored entries
// archive/data.pkl, archive/byteorder, archive/data/0 with `payload_bytes`
// bytes, archive/version), ending with a ZIP64 end record and locator plus
// the classic end record when `zip64` (as PyTorch's writer does), or with the
// classic end record only.
std::string zip_bytes(std::size_t payload_bytes = 64, bool zip64 = true);

// JSON text as Python's json.dumps(value, indent=2, sort_keys=True) writes it:
// floats in Python's repr (1.0, 0.0001, 1e-05), NaN/Infinity as Python's
// non-standard literals. No trailing newline.
std::string python_json(const boost::json::value& value);
// A double as Python's repr() writes it ("2.0", "1e-05", "NaN", "Infinity").
std::string python_float(double value);

// A fresh folder under $TMPDIR (or /tmp), removed with everything in it when
// the object goes away.
class temp_dir {
 public:
  explicit temp_dir(std::string_view tag = "ckptd-test");
  // Inside `base` instead of $TMPDIR or /tmp.
  temp_dir(std::string_view tag, const std::filesystem::path& base);
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(std::string_view rel) const { return path_ / rel; }

 private:
  std::filesystem::path path_;
};

// The training metrics a test should expect for one checkpoint.
struct expected_metrics {
  std::int64_t epoch = 0;
  double train_loss = 0;
  double validation_loss = 0;
  double perplexity = 0;
};

// ---------------------------------------------------------------------------
// Hugging Face Trainer (TRL, llama-stack's huggingface provider)

struct hf_options {
  // Optimizer steps per epoch; the float "epoch" is step / steps_per_epoch.
  std::int64_t steps_per_epoch = 100;
  // Trainer's save_total_limit: after each save, the oldest checkpoint-*
  // folders beyond this many are deleted. 0 keeps all.
  int save_total_limit = 0;
  // Evaluate right before each save, as with eval_strategy == save_strategy:
  // each checkpoint's log_history then holds an eval_loss at its own step.
  bool with_eval = true;
  // A training "loss" entry is logged every this many steps.
  std::int64_t logging_steps = 10;
  // LoRA via PEFT: README.md, adapter_model.safetensors, adapter_config.json
  // instead of config.json, generation_config.json, model.safetensors.
  bool peft = false;
  // Training losses logged at or after this step are NaN (a diverged run);
  // -1: never.
  std::int64_t nan_loss_from_step = -1;
  // num_train_epochs in trainer_state.json (max_steps follows from it).
  std::int64_t num_train_epochs = 3;
};

// One Trainer run writing checkpoints into `output_dir`:
//
//   hf_run run(dir / "job", {.steps_per_epoch = 50, .save_total_limit = 2});
//   run.begin_save(50);   // checkpoint-50/ with everything but trainer_state.json
//   run.finish_save();    // trainer_state.json, then rotation
//   run.save(100);        // both at once
class hf_run {
 public:
  explicit hf_run(std::filesystem::path output_dir, hf_options options = {});

  const std::filesystem::path& output_dir() const { return output_dir_; }
  const hf_options& options() const { return options_; }
  // output_dir / "checkpoint-<step>"
  std::filesystem::path checkpoint_dir(std::int64_t step) const;

  // Starts the save of `step` (> 0, larger than every earlier save): writes
  // checkpoint-<step>/ with, in this order, config.json,
  // generation_config.json, model.safetensors (or the PEFT files),
  // training_args.bin, optimizer.pt, scheduler.pt, rng_state.pth. Returns the
  // folder.
  std::filesystem::path begin_save(std::int64_t step);
  // Ends the pending save: writes trainer_state.json (log_history accumulated
  // over the run), then applies save_total_limit rotation like the Trainer
  // (oldest by folder mtime, or by step when all mtimes lie within 1 s;
  // deleted file by file, then the folder). Returns the deleted folders.
  std::vector<std::filesystem::path> finish_save();
  // begin_save + finish_save; returns the checkpoint folder.
  std::filesystem::path save(std::int64_t step);

  // A crash mid-write: writes only the first `bytes` bytes of the pending
  // save's trainer_state.json. The save stays pending; finish_save() may
  // still complete it.
  void write_truncated_trainer_state(std::size_t bytes);

  // The trainer_state.json text a save at `step` writes, given the saves so
  // far (sorted keys, indent 2, trailing newline, like the Trainer).
  std::string trainer_state_json(std::int64_t step) const;

  // The training loss logged at `step` (NaN per nan_loss_from_step) and the
  // eval loss an evaluation at `step` logs. Rounded to 4 decimals.
  double train_loss_at(std::int64_t step) const;
  static double eval_loss_at(std::int64_t step);

  // What ckptd should find in the checkpoint saved at `step`: the last
  // training loss logged at or before it (nullopt before the first logging
  // step), its eval loss (nullopt without evaluation), the whole epochs done.
  std::optional<double> expected_train_loss(std::int64_t step) const;
  std::optional<double> expected_validation_loss(std::int64_t step) const;
  std::int64_t expected_epoch(std::int64_t step) const;
  // All four, or nullopt when a loss is missing or not finite.
  std::optional<expected_metrics> expected_metrics_at(std::int64_t step) const;

  // Steps whose saves finished, oldest first (rotated ones included).
  const std::vector<std::int64_t>& saved_steps() const { return saved_; }

 private:
  std::vector<std::filesystem::path> rotate() const;

  std::filesystem::path output_dir_;
  hf_options options_;
  std::vector<std::int64_t> saved_;
  std::optional<std::int64_t> pending_;
};

// ---------------------------------------------------------------------------
// llama-stack inline torchtune provider

enum class torchtune_format {
  meta,         // consolidated.00.pth, adapter/adapter.pth (the provider's default)
  huggingface,  // adapter_model.pt, adapter/adapter_model.safetensors, adapter/adapter_config.json
};

struct torchtune_options {
  std::string algorithm = "sft";  // "sft" or "dpo": the folder is <model>-<algorithm>-<epoch>
  torchtune_format format = torchtune_format::meta;
  // DiskLogger lines written by begin_epoch (one per optimizer step).
  int steps_per_epoch = 3;
  // Copy the base model's side files (meta: params.json, tokenizer.model;
  // huggingface: config.json, generation_config.json, tokenizer.json) as the
  // provider does.
  bool copy_model_files = true;
};

// One llama-stack torchtune job writing into `checkpoint_root` (the
// provider's ~/.llama/checkpoints):
//
//   torchtune_run run(dir / "job");
//   run.begin_epoch("Llama3.2-3B-Instruct", 0);  // <model>-sft-0/log/log_<ts>.txt, lines appended
//   run.finish_epoch();                          // weights; the folder settles
class torchtune_run {
 public:
  explicit torchtune_run(std::filesystem::path checkpoint_root, torchtune_options options = {});
  ~torchtune_run();  // closes the open log
  torchtune_run(const torchtune_run&) = delete;
  torchtune_run& operator=(const torchtune_run&) = delete;

  // "<model>-<algorithm>-<epoch>" under the root.
  std::filesystem::path epoch_dir(std::string_view model, std::int64_t epoch) const;

  // Starts an epoch like the provider's training loop: closes the previous
  // epoch's log (the replaced DiskLogger is garbage-collected), creates
  // <model>-<algorithm>-<epoch>/log/log_<unix seconds>.txt and appends one
  // DiskLogger text line per step ("Step 12 | loss:1.8342 lr:2e-05 ...
  // grad_norm:tensor(0.8700) "), leaving the log open. Returns the folder.
  std::filesystem::path begin_epoch(std::string_view model, std::int64_t epoch);
  // Saves the epoch's checkpoint into its folder. meta: the copied files,
  // consolidated.00.pth, then adapter/adapter.pth. huggingface:
  // adapter_model.pt, adapter/adapter_model.safetensors,
  // adapter/adapter_config.json, then the copied files. The log stays open.
  // Returns the folder.
  std::filesystem::path finish_epoch();
  // Closes the current log (IN_CLOSE_WRITE under log/), as at the end of the
  // job. Idempotent.
  void close_log();

  // The loss the log line of global step `step` (1-based) carries.
  static double train_loss_at(std::int64_t step);
  const std::filesystem::path& log_file() const { return log_path_; }

 private:
  std::filesystem::path root_;
  torchtune_options options_;
  std::filesystem::path current_;
  std::filesystem::path log_path_;
  int log_fd_ = -1;
  std::int64_t global_step_ = 0;
};

// ---------------------------------------------------------------------------
// ckptd's manifest (see watcher/src/layout_manifest.cpp for the format)

inline constexpr std::string_view manifest_file_name = "ckptd-checkpoint.json";

struct manifest_fields {
  std::optional<std::string> identifier = std::nullopt;
  std::optional<std::int64_t> epoch = std::nullopt;
  std::optional<std::int64_t> step = std::nullopt;
  // training_metrics is written when either loss is set; perplexity only
  // when set (ckptd then derives exp(validation_loss)).
  std::optional<double> train_loss = std::nullopt;
  std::optional<double> validation_loss = std::nullopt;
  std::optional<double> perplexity = std::nullopt;
};

// The manifest text for `fields` (Python json style).
std::string manifest_json(const manifest_fields& fields);

// Writes a checkpoint folder `dir`: config.json, model.safetensors, then the
// manifest LAST. Returns `dir`.
std::filesystem::path write_manifest_checkpoint(const std::filesystem::path& dir,
                                                const manifest_fields& fields = {});
// The same with a manifest of any text (malformed ones included).
std::filesystem::path write_manifest_checkpoint_raw(const std::filesystem::path& dir,
                                                    std::string_view manifest_text);

// ---------------------------------------------------------------------------
// More bytes and file operations

// A valid ustar archive holding `members` (name, content) as Python's
// tarfile writes one (NeMo's .nemo): per member a 512-byte header with its
// checksum, the data padded to 512 bytes; then two zero end blocks, the
// whole padded with zeros to a multiple of 10240 bytes.
std::string tar_bytes(const std::vector<std::pair<std::string, std::string>>& members);

// Writes `bytes` to `staging` (closed), then renames it to `path`: the
// watcher of path's folder sees one IN_MOVED_TO (or nothing but the rename
// when `staging` lies outside every watched folder).
void write_and_rename(const std::filesystem::path& staging, const std::filesystem::path& path,
                      std::string_view bytes);

// A checkpoint's metrics as expected by a test; the loss functions below are
// deterministic in the step or epoch, rounded to 4 decimals.
double fixture_train_loss(std::int64_t step);
double fixture_validation_loss(std::int64_t epoch);

// ---------------------------------------------------------------------------
// torchtune's own checkpointers (epoch_<k>/, step_<n>/) and DiskLogger

struct torchtune_checkpointer_options {
  std::string dir_prefix = "epoch";  // "epoch" or "step": the checkpointer's dir_prefix
  // LoRA: adapter_model.pt, adapter_model/ (empty), adapter_model.safetensors,
  // adapter_config.json after the model shards.
  bool lora = false;
  int shards = 2;  // model-0000k-of-0000n.safetensors, then the index
  // keep_last_n_checkpoints: after each save, all but the newest N folders
  // are removed (rmtree). 0 keeps all.
  int keep_last_n = 0;
  bool jsonl_log = false;  // DiskLogger format: .jsonl instead of .txt
};

// One torchtune recipe run writing into `output_dir`:
//
//   torchtune_checkpointer_run run(dir / "job");
//   run.train_steps(4);        // logs/log_<ts>.txt gets "Step 1 | loss:... " lines
//   run.begin_save(0);         // epoch_0/ with weights, adapters, copied files
//   run.finish_save(true);     // recipe_state.pt (intermediate), then pruning
class torchtune_checkpointer_run {
 public:
  explicit torchtune_checkpointer_run(std::filesystem::path output_dir,
                                      torchtune_checkpointer_options options = {});
  ~torchtune_checkpointer_run();  // closes the log
  torchtune_checkpointer_run(const torchtune_checkpointer_run&) = delete;
  torchtune_checkpointer_run& operator=(const torchtune_checkpointer_run&) = delete;

  // output_dir / "<dir_prefix>_<k>"
  std::filesystem::path checkpoint_dir(std::int64_t k) const;
  // Logs `steps` optimizer steps, one DiskLogger line each, flushed; the log
  // (created on first use in output_dir/logs/) stays open like the recipe's.
  void train_steps(std::int64_t steps);
  std::int64_t global_step() const { return global_step_; }
  const std::filesystem::path& log_file() const { return log_path_; }
  // The loss the log line of global step `step` carries.
  static double loss_at(std::int64_t step) { return fixture_train_loss(step); }

  // Writes checkpoint `k` in the checkpointer's order: model shards, the
  // index, then (LoRA) adapter_model.pt, adapter_model/, adapter_model.safetensors,
  // adapter_config.json, then the copied config and tokenizer files. Not
  // recipe_state.pt. Returns the folder.
  std::filesystem::path begin_save(std::int64_t k);
  // recipe_state.pt when `intermediate` (every epoch but the last), then
  // keep_last_n pruning. Returns the pruned folders.
  std::vector<std::filesystem::path> finish_save(bool intermediate);
  std::filesystem::path save(std::int64_t k, bool intermediate);

 private:
  std::filesystem::path output_dir_;
  torchtune_checkpointer_options options_;
  std::filesystem::path log_path_;
  int log_fd_ = -1;
  std::int64_t global_step_ = 0;
  std::optional<std::int64_t> pending_;
  std::vector<std::int64_t> saved_;
};

// ---------------------------------------------------------------------------
// PyTorch Lightning ModelCheckpoint + CSVLogger

struct lightning_options {
  // save_top_k on monitor="val_loss" (mode min): after a save, the worst
  // beyond k is removed. -1 keeps all.
  int save_top_k = 1;
  bool save_last = true;
  // Filename template "{epoch}-{step}-{val_loss:.2f}" instead of "{epoch}-{step}".
  bool val_loss_in_name = true;
  // Lightning >= 2.4 on one filesystem: each .ckpt is written into
  // `staging_dir` and renamed into place. Otherwise written straight to
  // its final name (Lightning < 2.4), in two chunks.
  bool rename_into_place = true;
};

// One Lightning run with the CSVLogger:
// <root>/lightning_logs/version_0/{hparams.yaml, metrics.csv, checkpoints/}.
class lightning_run {
 public:
  // `staging_dir` stands for $TMPDIR: on the same filesystem, outside every
  // watched folder.
  lightning_run(std::filesystem::path root, std::filesystem::path staging_dir,
                lightning_options options = {});

  std::filesystem::path version_dir() const { return version_dir_; }
  std::filesystem::path checkpoints_dir() const { return version_dir_ / "checkpoints"; }
  // The file name ModelCheckpoint gives a save (without the -v<k> counter).
  std::string checkpoint_name(std::int64_t epoch, std::int64_t step) const;

  // One epoch of training and validation: a train_loss row for `step`,
  // then the epoch's val_loss row (full precision); metrics.csv is
  // rewritten whole, as CSVLogger's flush does when keys change.
  void log_epoch(std::int64_t epoch, std::int64_t step);
  // The validation loss the name carries ({val_loss:.2f}).
  static double name_val_loss(std::int64_t epoch);

  // Saves at the end of `epoch`: the top-k file, last.ckpt (rewritten), then
  // removes the file that fell out of the top k. Returns the saved file.
  // Files get 256 + (step % 97) bytes of payload, last.ckpt 256 + (step % 89).
  std::filesystem::path save(std::int64_t epoch, std::int64_t step);
  // A copy from another filesystem in progress: the first half of the file
  // under its final name. finish_copy() writes the rest (closing it).
  std::filesystem::path begin_copy(std::int64_t epoch, std::int64_t step);
  void finish_copy();
  // Folder checkpoints: DeepSpeed strategy (checkpoint/ tag, then latest)
  // and FSDP sharded (.distcp files, .metadata, then meta.pt). `finish`
  // false leaves out the last file.
  std::filesystem::path save_deepspeed_folder(std::int64_t epoch, std::int64_t step,
                                              bool finish = true);
  std::filesystem::path save_fsdp_folder(std::int64_t epoch, std::int64_t step, bool finish = true);

 private:
  void write_ckpt(const std::filesystem::path& path, std::size_t payload);
  void write_csv() const;
  // Records a saved file and removes the worst beyond save_top_k.
  void keep_top(double val_loss, const std::filesystem::path& path);

  std::filesystem::path version_dir_;
  std::filesystem::path staging_dir_;
  lightning_options options_;
  std::vector<std::vector<std::string>> csv_rows_;             // epoch, step, train_loss, val_loss
  std::vector<std::pair<double, std::filesystem::path>> top_;  // (val_loss, file)
  std::optional<std::filesystem::path> copying_;
  std::int64_t copying_epoch_ = 0;
  int staged_ = 0;
};

// ---------------------------------------------------------------------------
// DeepSpeed engine

struct deepspeed_options {
  int data_parallel_ranks = 2;
  // Leave the last rank's optimizer shard for land_late_shards(): it lands
  // after `latest` (there is no barrier before rank 0 writes it).
  bool late_last_rank = false;
};

class deepspeed_run {
 public:
  explicit deepspeed_run(std::filesystem::path save_dir, deepspeed_options options = {});
  std::filesystem::path tag_dir(std::int64_t step) const;
  // mp_rank_00_model_states.pt, each rank's optimizer shard, zero_to_fp32.py.
  std::filesystem::path begin_save(std::int64_t step);
  // Rank 0 rewrites `latest` with the tag.
  void finish_save();
  void land_late_shards();
  std::filesystem::path save(std::int64_t step);
  // `latest` with any content (junk, a partial rewrite).
  void write_latest_raw(std::string_view text);

 private:
  std::filesystem::path save_dir_;
  deepspeed_options options_;
  std::optional<std::int64_t> pending_;
  std::optional<std::int64_t> late_;
};

// ---------------------------------------------------------------------------
// Megatron-LM

struct megatron_options {
  bool dist_ckpt = true;  // torch_dist (.distcp, .metadata, metadata.json) or legacy mp_rank_*
  int ranks = 2;
  // --save-retain-interval K: after a save, the iteration the tracker named
  // before is deleted unless it is a multiple of K. 0 keeps all.
  std::int64_t retain_interval = 0;
};

class megatron_run {
 public:
  explicit megatron_run(std::filesystem::path save_dir, megatron_options options = {});
  std::filesystem::path iteration_dir(std::int64_t iteration) const;  // iter_%07d
  std::filesystem::path tracker() const;
  // The data, .metadata (.metadata.tmp renamed), metadata.json; or legacy
  // mp_rank_0<r>/model_optim_rng.pt.
  std::filesystem::path begin_save(std::int64_t iteration);
  // Rewrites the tracker; then retention. Returns deleted folders.
  std::vector<std::filesystem::path> finish_save();
  std::filesystem::path save(std::int64_t iteration);
  void write_tracker_raw(std::string_view text);

 private:
  std::filesystem::path save_dir_;
  megatron_options options_;
  std::optional<std::int64_t> pending_;
  std::optional<std::int64_t> tracked_;
};

// ---------------------------------------------------------------------------
// torch.distributed.checkpoint as torchtitan saves it

struct torchtitan_options {
  int ranks = 2;
  int keep_latest_k = 0;  // 0 keeps all
};

class torchtitan_run {
 public:
  // Checkpoints go to dump_folder/checkpoint/step-<N>/.
  explicit torchtitan_run(std::filesystem::path dump_folder, torchtitan_options options = {});
  std::filesystem::path checkpoint_folder() const { return folder_; }
  std::filesystem::path step_dir(std::int64_t step) const;
  // Every rank's __<rank>_0.distcp (replacing those of an earlier save into
  // the same folder, whose .metadata stays until finish_save).
  std::filesystem::path begin_save(std::int64_t step);
  // .metadata.tmp, the old .metadata removed, the rename; then keep_latest_k
  // purging. Returns the purged folders.
  std::vector<std::filesystem::path> finish_save();
  std::filesystem::path save(std::int64_t step);
  // last_save_in_hf: shards staged in step-N/sharded/, moved up, the index
  // last, the staging folder removed.
  std::filesystem::path save_hf(std::int64_t step);

 private:
  std::filesystem::path folder_;
  torchtitan_options options_;
  std::optional<std::int64_t> pending_;
  std::vector<std::int64_t> saved_;
};

// ---------------------------------------------------------------------------
// Orbax CheckpointManager

enum class orbax_protocol {
  atomic_rename,  // <step>.orbax-checkpoint-tmp/, then renamed
  commit_file,    // the final folder, finished by commit_success.txt
};

struct orbax_options {
  std::string step_prefix;  // "" -> "<step>", else "<prefix>_<step>"
  int step_digits = 0;      // zero padding to this many digits (0: none)
  orbax_protocol protocol = orbax_protocol::atomic_rename;
  bool commit_success_file = true;  // since orbax 0.12.3 on every back-end
  int max_to_keep = 0;              // 0 keeps all
};

class orbax_run {
 public:
  explicit orbax_run(std::filesystem::path directory, orbax_options options = {});
  std::filesystem::path step_dir(std::int64_t step) const;
  // Writes the step's items and metrics (atomic_rename: in the tmp folder;
  // commit_file: in the final folder, with an uncommitted
  // _CHECKPOINT_METADATA). `metrics` go to metrics/metrics and into
  // _CHECKPOINT_METADATA.
  std::filesystem::path begin_save(std::int64_t step, boost::json::object metrics = {});
  // Commits (metadata with commit_timestamp_nsecs, commit_success.txt, the
  // rename), then max_to_keep retention. Returns the removed folders.
  std::vector<std::filesystem::path> finish_save();
  std::filesystem::path save(std::int64_t step, boost::json::object metrics = {});
  // The commit_timestamp_nsecs written for `step`.
  std::int64_t commit_timestamp_ns(std::int64_t step) const;

 private:
  std::filesystem::path directory_;
  orbax_options options_;
  std::optional<std::int64_t> pending_;
  boost::json::object pending_metrics_;
  std::vector<std::pair<std::int64_t, std::int64_t>> saved_;  // step, commit ns
};

// ---------------------------------------------------------------------------
// NVIDIA NeMo

struct nemo_options {
  std::string name = "megatron_gpt";
  int save_top_k = 0;  // on val_loss (min); 0 keeps all
  bool save_last = true;
};

class nemo_run {
 public:
  explicit nemo_run(std::filesystem::path checkpoints_dir, nemo_options options = {});
  // "<name>--val_loss=<.4f>-epoch=<E>-consumed_samples=<C>.0[-last]"
  std::string dist_name(double val_loss, std::int64_t epoch, std::int64_t consumed,
                        bool last = false) const;
  std::filesystem::path marker_of(const std::filesystem::path& checkpoint) const;
  static double val_loss_at(std::int64_t epoch) { return fixture_validation_loss(epoch); }

  // NeMo 2.x: the "-unfinished" marker, then the folder: weights/ (DCP data,
  // .metadata, metadata.json), then context/. The marker stays.
  std::filesystem::path begin_save(std::int64_t epoch, std::int64_t consumed);
  // Removes the marker; then the "-last" copy and save_top_k removals, each
  // wrapped in its own marker. Returns the removed folders.
  std::vector<std::filesystem::path> finish_save();
  std::filesystem::path save(std::int64_t epoch, std::int64_t consumed);
  // NeMo 1.x: "<name>--val_loss=<.4f>-epoch=<E>.ckpt", marker-wrapped.
  std::filesystem::path save_ckpt(std::int64_t epoch);
  // "<name>.nemo": an existing one is moved to "<name>-v1.nemo", the new
  // tar written (begin: its first half), then the backup deleted.
  std::filesystem::path begin_nemo();
  void finish_nemo();

 private:
  std::filesystem::path dir_;
  nemo_options options_;
  std::optional<std::filesystem::path> pending_;
  std::vector<std::pair<double, std::filesystem::path>> top_;
  bool nemo_pending_ = false;
};

}  // namespace ckptd::test
