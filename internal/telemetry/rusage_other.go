//go:build !unix

package telemetry

// ProcessCPUSeconds is 0 where getrusage is not available.
func ProcessCPUSeconds() float64 { return 0 }

// PeakRSSMB is 0 where getrusage is not available.
func PeakRSSMB() float64 { return 0 }
