//go:build !unix

package exsim

import (
	"testing"
	"time"
)

// processCPU is not measured here; the cpu metric reads 0.
func processCPU(*testing.B) time.Duration { return 0 }
