// A* on 4-connected unit-cost grids with the Manhattan heuristic, emitting the trace of docs/design.md §3.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "grid.hpp"

namespace reasonless {

constexpr int kMaxCells = 64 * 64;
constexpr uint16_t kCloseBit = 0x8000;

// How A* orders open nodes of equal f (docs/design.md §3).
enum class TiePolicy : uint8_t { kFifo, kMinG, kMaxG, kLifo, kRandom };
constexpr int kNumTiePolicies = 5;
constexpr const char* kTiePolicyNames[kNumTiePolicies] = {"fifo", "min_g", "max_g", "lifo", "random"};

// False if `name` is not one of kTiePolicyNames.
bool parse_tie_policy(std::string_view name, TiePolicy* out);
// "fifo, min_g, max_g, lifo, random", for error messages.
std::string tie_policy_list();

// splitmix64 finaliser and stream (Steele et al.): cheap, and good enough to seed and shuffle.
inline uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
struct SplitMix64 {
  uint64_t state;
  uint64_t next() { return splitmix64_mix(state += 0x9e3779b97f4a7c15ULL); }
};
// The random stream of one example depends only on (seed, instance id), never on batching or threads.
inline uint64_t example_rng_state(uint64_t seed, int64_t instance_id) {
  return splitmix64_mix(splitmix64_mix(seed + 0x9e3779b97f4a7c15ULL) + static_cast<uint64_t>(instance_id));
}

// A trace has at most this many operations: each close scans 4 neighbours, each create comes from a scan.
constexpr int max_trace_ops(int cells) { return 5 * cells; }

struct AStarResult {
  int n_ops;   // rows of 3 uint16 written
  int n_plan;  // plan cells written (0 if unsolvable)
  bool solved;
};

// Reusable per-thread A* state. A solve resets only the cells it touched, so the next one starts
// clean at a cost proportional to the search, not to the grid.
class AStarSolver {
 public:
  AStarSolver();

  // Solves one maze. Writes the trace to `ops` (3 uint16 per operation: cell | kCloseBit for a
  // close, g, h; room for max_trace_ops(cells) operations) and the plan (start .. goal cell
  // indices; room for `cells`) to `plan`, which gets nothing if the goal is unreachable.
  // `rng_state` seeds the random policy (see example_rng_state) and is ignored by the others.
  // Preconditions, checked by callers: 4 <= rows, cols <= 64; start and goal are free cells.
  AStarResult solve(const GridView& grid, int start, int goal, TiePolicy policy, uint64_t rng_state, uint16_t* ops,
                    uint16_t* plan);

 private:
  struct Cell {
    uint16_t g;        // best g so far; kUnreached before any create; 0 once closed (see run)
    int16_t parent;
    int16_t heap_pos;  // index in heap_, -1 when not open
    uint16_t seq;      // order of first insertion into the open list
  };
  static constexpr uint16_t kUnreached = 0xFFFF;
  template <TiePolicy P>
  AStarResult run(const GridView& grid, int start, int goal, uint64_t rng_state, uint16_t* ops, uint16_t* plan);
  // fifo without a heap: only two f levels are ever open (see astar.cpp), each a queue in seq order.
  AStarResult run_fifo(const GridView& grid, int start, int goal, uint16_t* ops, uint16_t* plan);
  // The open list is a binary min-heap of keys that carry the cell in their low bits (see run).
  // Entries are passed by value so a sift never reloads what was just stored.
  void sift_up(int pos, uint64_t key);
  void sift_down(int pos, uint64_t key, int size);

  std::unique_ptr<Cell[]> cells_;
  std::unique_ptr<uint64_t[]> heap_;
  std::unique_ptr<int16_t[]> inserted_;  // cells in order of first insertion (by seq), to reset
  std::unique_ptr<uint32_t[]> levels_;   // run_fifo's two f levels, kMaxCells entries each
};

}  // namespace reasonless
