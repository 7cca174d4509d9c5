package layers

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nixos2docker/nixos2docker/storepath"
)

// Describe names a layer by its three largest store paths, without hashes:
// "glibc-2.42, libidn2-2.3.8, systemd-262, … 4 more". Both faces (the
// frontend's progress and history, the assembler's) name layers with it.
func Describe(paths []string, sizes map[string]int64) string {
	const shown = 3
	ps := slices.Clone(paths)
	slices.SortStableFunc(ps, func(a, b string) int {
		if c := cmp.Compare(sizes[b], sizes[a]); c != 0 {
			return c
		}
		return cmp.Compare(storepath.Name(a), storepath.Name(b))
	})
	names := make([]string, 0, shown+1)
	for i, p := range ps {
		if i == shown {
			names = append(names, fmt.Sprintf("… %d more", len(ps)-shown))
			break
		}
		names = append(names, storepath.Name(p))
	}
	return strings.Join(names, ", ")
}

// HumanSize formats a byte count: 31 MiB, 4.2 KiB, 466 B.
func HumanSize(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, suffix := float64(n), ""
	for _, s := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= 1024
		suffix = s
		if v < 1024 {
			break
		}
	}
	if v < 10 {
		return fmt.Sprintf("%.1f %s", v, suffix)
	}
	return fmt.Sprintf("%.0f %s", v, suffix)
}
