// Search algorithms other than A*, traced in A*'s create/close language (docs/design.md §3), for the
// `other_algorithm:*` training arms: same maze, same start and goal, a different search.
//
// Shared rules (so every trace reads like an A* trace):
//  - the frontier starts with the start cell at g = 0 and no `create` is emitted for it;
//  - popping a cell emits `close cell g h`; the search stops right after closing the goal;
//  - expanding a cell scans its neighbours up, right, down, left; each neighbour that is pushed
//    emits `create nb g+1 h(nb)` in that order;
//  - g is the cost of the path to the cell along the search's own parent links; h is always the
//    Manhattan distance to the goal, written even when the algorithm ignores it.
// Per algorithm:
//  - bfs:      FIFO queue; a cell is pushed once, when first reached (marked at push), never re-opened.
//  - dfs:      LIFO stack, marked visited at *pop*: every free neighbour that is not yet closed is
//              pushed (and created) again, with the g of this path; a popped entry whose cell is
//              already closed is skipped silently. This is the textbook iterative depth-first search,
//              so the last neighbour pushed (left before down before right before up) is explored first.
//  - greedy:   best-first on h alone, ties first-in first-out; a cell is pushed once (marked at push),
//              keeping the g of the path that first reached it.
//  - dijkstra: uniform-cost on g, ties first-in first-out, a cell created again only when its g
//              improves. With unit costs g never improves after the first push, and the pop order
//              (g, insertion) is BFS's queue order, so the trace equals bfs's; it is kept as its own
//              name because that equivalence is a property of unit-cost grids, not of the algorithm.
// A goal that cannot be reached leaves a trace that empties the frontier and has no close of the goal.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "astar.hpp"
#include "grid.hpp"

namespace reasonless {

enum class SearchAlgorithm : uint8_t { kBfs, kDfs, kGreedy, kDijkstra };
constexpr int kNumSearchAlgorithms = 4;
constexpr const char* kSearchAlgorithmNames[kNumSearchAlgorithms] = {"bfs", "dfs", "greedy", "dijkstra"};

// False if `name` is not one of kSearchAlgorithmNames.
bool parse_search_algorithm(std::string_view name, SearchAlgorithm* out);

// Reusable per-thread state; a search resets only the cells it touched. Allocates only when built.
class SearchSolver {
 public:
  SearchSolver();
  // Writes the trace (3 uint16 per op: cell | kCloseBit for a close, g, h) to `ops`, which must have
  // room for max_trace_ops(rows*cols) operations, and returns the number of operations.
  // Preconditions, checked by callers: 4 <= rows, cols <= 64; start and goal are free cells.
  int run(const GridView& grid, int start, int goal, SearchAlgorithm algorithm, uint16_t* ops);

 private:
  int run_bfs(const GridView& grid, int start, int goal, uint16_t* ops);
  int run_dfs(const GridView& grid, int start, int goal, uint16_t* ops);
  template <bool kByG>
  int run_best_first(const GridView& grid, int start, int goal, uint16_t* ops);
  void reset(int n_touched);

  static constexpr uint16_t kUnreached = 0xFFFF;
  std::unique_ptr<uint16_t[]> g_;        // best g pushed so far (kUnreached: never)
  std::unique_ptr<uint8_t[]> closed_;
  std::unique_ptr<int16_t[]> touched_;   // cells whose g_/closed_ to reset
  std::unique_ptr<uint64_t[]> frontier_; // queue, stack or bucket entries: one per create, plus the start
  // Best-first open list as buckets of equal priority (Dial's queue; priorities are small integers):
  // first-in first-out inside a bucket, linked through next_.
  std::unique_ptr<int32_t[]> next_;
  std::unique_ptr<int32_t[]> head_;      // per priority, -1 when empty
  std::unique_ptr<int32_t[]> tail_;
};

}  // namespace reasonless
