#pragma once
// The layouts ckptd knows, one object each, defined in layout_<name>.cpp.
// all_layouts() (layouts.cpp) lists them; tests may name one directly.

#include "layout.hpp"

namespace ckptd::watcher {

// Hugging Face Trainer (and TRL, llama-stack's huggingface provider):
// "checkpoint-<global_step>" folders, complete once trainer_state.json names
// their step.
const layout& hf_trainer_layout();

// llama-stack's inline torchtune provider: "<model>-sft-<epoch>" and
// "<model>-dpo-<epoch>" folders, settling once their weights are whole.
const layout& llama_stack_torchtune_layout();

// ckptd's own manifest (manifest_file), written last into any folder.
const layout& manifest_layout();

// torchtune's own checkpointers: "epoch_<k>" / "step_<n>" folders, settling
// once their weights (and recipe_state.pt, when present) are whole.
const layout& torchtune_epoch_layout();

// PyTorch Lightning's ModelCheckpoint: "*.ckpt" files (ZIP end record) and
// "*.ckpt" folders (DeepSpeed strategy's "latest", FSDP's "meta.pt").
const layout& lightning_layout();

// DeepSpeed's engine: "global_step<N>" folders, complete once the sibling
// "latest" names them or a newer tag.
const layout& deepspeed_layout();

// Megatron-LM: "iter_<7 digits>" (and "release") folders, complete once the
// sibling latest_checkpointed_iteration.txt reaches them.
const layout& megatron_layout();

// torch.distributed.checkpoint as torchtitan names it: "step-<N>" folders,
// complete once ".metadata" is newer than every ".distcp" (or an HF index
// with its shards is there).
const layout& dcp_layout();

// Orbax (JAX): numeric or "<prefix>_<N>" step folders, complete once
// commit_success.txt or a committed _CHECKPOINT_METADATA is there.
const layout& orbax_layout();

// NVIDIA NeMo: "*.nemo" tar files, NeMo 1.x "<name>--<metric>=...ckpt" files
// and NeMo 2.x "<name>--<metric>=..." folders, complete once whole and their
// "<name>-unfinished" sibling is gone.
const layout& nemo_layout();

// The file Orbax writes into every step folder it saves; it makes a folder
// an Orbax checkpoint whatever its name (see choose_layout).
inline constexpr std::string_view orbax_metadata_file = "_CHECKPOINT_METADATA";

// Specificities, highest wins (see choose_layout in layouts.cpp for the rule
// and the reasons behind this order). Spaced out so that a future layout can
// slot in between.
inline constexpr int manifest_specificity = 100;
inline constexpr int hf_trainer_specificity = 30;
inline constexpr int nemo_specificity = 28;
inline constexpr int megatron_specificity = 26;
inline constexpr int deepspeed_specificity = 25;
inline constexpr int dcp_specificity = 24;
inline constexpr int torchtune_epoch_specificity = 22;
inline constexpr int llama_stack_torchtune_specificity = 20;
inline constexpr int lightning_specificity = 15;
inline constexpr int orbax_specificity = 5;

}  // namespace ckptd::watcher
