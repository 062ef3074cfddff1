// A non-owning view of one maze: rows × cols cells, cell = y*cols + x, walls[cell] != 0 for a wall.
#pragma once
#include <cstdint>
#include <cstdlib>

namespace reasonless {

// Neighbour order fixed by docs/design.md §3 (it decides trace order): up, right, down, left.
constexpr int kDirs = 4;
constexpr int kDx[kDirs] = {0, 1, 0, -1};
constexpr int kDy[kDirs] = {-1, 0, 1, 0};

struct GridView {
  int rows = 0;
  int cols = 0;
  const uint8_t* walls = nullptr;  // rows*cols bytes

  int size() const { return rows * cols; }
  int cell(int x, int y) const { return y * cols + x; }
  int x_of(int cell) const { return cell % cols; }
  int y_of(int cell) const { return cell / cols; }
  bool in_bounds(int x, int y) const { return x >= 0 && x < cols && y >= 0 && y < rows; }
  bool is_wall(int cell) const { return walls[cell] != 0; }
  bool is_free(int x, int y) const { return in_bounds(x, y) && walls[cell(x, y)] == 0; }

  // The in-bounds neighbour of `cell` in direction d, or -1 if the move leaves the grid.
  // Walls are not filtered: callers test them where they need to.
  int neighbour(int cell, int d) const {
    const int x = x_of(cell) + kDx[d], y = y_of(cell) + kDy[d];
    return in_bounds(x, y) ? this->cell(x, y) : -1;
  }

  // Writes the free neighbours in up, right, down, left order into out; returns how many.
  int free_neighbours(int cell, int out[kDirs]) const {
    int n = 0;
    for (int d = 0; d < kDirs; ++d) {
      const int nb = neighbour(cell, d);
      if (nb >= 0 && walls[nb] == 0) out[n++] = nb;
    }
    return n;
  }

  int manhattan(int a, int b) const {
    return std::abs(x_of(a) - x_of(b)) + std::abs(y_of(a) - y_of(b));
  }
};

inline int manhattan(int x0, int y0, int x1, int y1) { return std::abs(x0 - x1) + std::abs(y0 - y1); }

}  // namespace reasonless
