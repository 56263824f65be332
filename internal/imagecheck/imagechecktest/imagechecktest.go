// Package imagechecktest makes images for tests that would cost too much to
// make by encoding them: PNGs of any size whose pixels are all zero, built
// without holding their pixels, as an attacker builds a decompression bomb.
package imagechecktest

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"hash/crc32"
)

// PNG color types.
const (
	Gray      = 0
	RGB       = 2
	Paletted  = 3
	GrayAlpha = 4
	RGBA      = 6
)

// ZeroPNG returns a valid PNG of w×h pixels, all zero (black, or
// transparent), of the given bit depth and color type (RGBA with depth 16
// is 8 bytes a pixel once decoded). It costs a few kilobytes of work
// whatever its size: every row is the same zero bytes, so one compressed
// block of zeros, repeated, is a valid zlib stream of the whole image (its
// back-references, at most 32 KiB back, only ever see zeros).
func ZeroPNG(w, h, depth, colorType int) []byte {
	channels := map[int]int{Gray: 1, RGB: 3, Paletted: 1, GrayAlpha: 2, RGBA: 4}[colorType]
	rowBytes := 1 + (w*channels*depth+7)/8 // a filter byte (0, none), then the pixels
	total := int64(rowBytes) * int64(h)

	const chunk = 1 << 20
	blockOf := func(n int) []byte {
		var b bytes.Buffer
		fw, _ := flate.NewWriter(&b, flate.BestCompression)
		_, _ = fw.Write(make([]byte, n))
		_ = fw.Flush() // a byte-aligned, non-final block
		return b.Bytes()
	}
	var z bytes.Buffer
	z.Write([]byte{0x78, 0xDA}) // zlib header, best compression
	full := blockOf(chunk)
	for n := total / chunk; n > 0; n-- {
		z.Write(full)
	}
	if rest := int(total % chunk); rest > 0 {
		z.Write(blockOf(rest))
	}
	z.Write([]byte{0x03, 0x00}) // an empty final block
	// Adler-32 of total zero bytes: a stays 1, b adds 1 a byte.
	_ = binary.Write(&z, binary.BigEndian, uint32(total%65521)<<16|1)

	var out bytes.Buffer
	out.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = byte(depth), byte(colorType)
	writeChunk(&out, "IHDR", ihdr)
	if colorType == Paletted {
		writeChunk(&out, "PLTE", []byte{0, 0, 0})
	}
	writeChunk(&out, "IDAT", z.Bytes())
	writeChunk(&out, "IEND", nil)
	return out.Bytes()
}

func writeChunk(b *bytes.Buffer, kind string, data []byte) {
	_ = binary.Write(b, binary.BigEndian, uint32(len(data)))
	crc := crc32.NewIEEE()
	crc.Write([]byte(kind))
	crc.Write(data)
	b.WriteString(kind)
	b.Write(data)
	_ = binary.Write(b, binary.BigEndian, crc.Sum32())
}
