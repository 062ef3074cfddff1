// Training-arm traces computed per example from the example's own maze and A* trace (the arms of
// reasonless/arms.py that need more than a copy): shuffled, reversed, noise and other_algorithm:*.
// Ops use the corpus layout: 3 uint16 per operation (cell | kCloseBit for a close, g, h).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "astar.hpp"
#include "grid.hpp"
#include "search.hpp"

namespace reasonless {

enum class ArmKind : uint8_t { kShuffled, kReversed, kNoise, kBfs, kDfs, kGreedy, kDijkstra };
constexpr int kNumArmKinds = 7;
constexpr const char* kArmKindNames[kNumArmKinds] = {
    "shuffled", "reversed", "noise", "other_algorithm:bfs", "other_algorithm:dfs", "other_algorithm:greedy",
    "other_algorithm:dijkstra"};

bool parse_arm_kind(std::string_view name, ArmKind* out);
std::string arm_kind_list();  // "shuffled, reversed, ..." for error messages

// Arms whose trace has exactly as many operations as the example's own.
inline bool arm_keeps_length(ArmKind a) { return a == ArmKind::kShuffled || a == ArmKind::kReversed || a == ArmKind::kNoise; }

// The random stream of one example of one arm: a function of (seed, arm, instance id) only.
inline uint64_t arm_rng_state(uint64_t seed, ArmKind arm, int64_t instance_id) {
  const uint64_t arm_seed = splitmix64_mix(seed ^ (0xD1B54A32D192ED03ULL * (static_cast<uint64_t>(arm) + 1)));
  return example_rng_state(arm_seed, instance_id);
}

// Per-thread scratch for arm_ops; allocates only when built.
struct ArmWorkspace {
  SearchSolver search;
  int16_t free_cells[kMaxCells];
  std::vector<uint16_t> scratch;  // for callers that need a trace before knowing where it goes
};

// Writes the arm's trace of one example to `out` and returns its number of operations.
// `own` holds the example's n_own A* operations. `out` needs room for n_own operations when
// arm_keeps_length(arm), else for max_trace_ops(rows*cols). Preconditions (checked by callers):
// 4 <= rows, cols <= 64; start and goal are free cells.
int64_t arm_ops(ArmKind arm, const GridView& grid, int start, int goal, const uint16_t* own, int64_t n_own,
            uint64_t rng_state, ArmWorkspace& ws, uint16_t* out);

}  // namespace reasonless
