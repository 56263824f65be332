//go:build unix

package telemetry

import (
	"runtime"
	"syscall"
)

// ProcessCPUSeconds is the CPU time, user and system, the process has
// used since it started.
func ProcessCPUSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// PeakRSSMB is the process's peak resident set in MiB (getrusage's
// ru_maxrss: KiB on Linux and the BSDs, bytes on macOS).
func PeakRSSMB() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	if runtime.GOOS == "darwin" {
		return float64(ru.Maxrss) / (1 << 20)
	}
	return float64(ru.Maxrss) / 1024
}
