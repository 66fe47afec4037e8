package projections

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// column is one array parameter of a batch statement, built in Postgres's
// binary wire format as its elements are appended. pgx encodes a slice
// parameter element by element through its generic type system (an
// interface value and a plan lookup per element, and a buffer regrown
// from scratch for every statement), which made the encoding a third of a
// live consumer's own work and a quarter of a catch-up's; a column costs a
// copy of each element.
type column struct {
	elemOID, arrayOID uint32
	n                 int
	hasNull           bool
	// buf is room for the array's header, then each element: its length
	// (-1 for NULL) and its bytes.
	buf []byte
}

// arrayHeader is the size of a one-dimensional array's header.
const arrayHeader = 20

// elementType is a column's element type: its OID, its array type's, and
// the bytes a typical element takes (to size the column).
type elementType struct {
	oid, arrayOID uint32
	typicalSize   int
}

// The element types of the batch statements' columns.
var (
	textElements  = elementType{pgtype.TextOID, pgtype.TextArrayOID, 24}
	int8Elements  = elementType{pgtype.Int8OID, pgtype.Int8ArrayOID, 12}
	boolElements  = elementType{pgtype.BoolOID, pgtype.BoolArrayOID, 5}
	byteaElements = elementType{pgtype.ByteaOID, pgtype.ByteaArrayOID, 256}
	jsonElements  = elementType{pgtype.JSONOID, pgtype.JSONArrayOID, 128}
	timeElements  = elementType{pgtype.TimestamptzOID, pgtype.TimestamptzArrayOID, 12}
)

// newColumn is an empty column of type t with room for capacity elements.
func newColumn(t elementType, capacity int) *column {
	return &column{elemOID: t.oid, arrayOID: t.arrayOID, buf: make([]byte, arrayHeader, arrayHeader+capacity*t.typicalSize)}
}

func (c *column) null() {
	c.n, c.hasNull = c.n+1, true
	c.buf = binary.BigEndian.AppendUint32(c.buf, 0xFFFFFFFF) // -1
}

// text appends s to a text column.
func (c *column) text(s string) {
	c.n++
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(s)))
	c.buf = append(c.buf, s...)
}

// textOrNull appends s, or NULL when s is empty.
func (c *column) textOrNull(s string) {
	if s == "" {
		c.null()
		return
	}
	c.text(s)
}

// bytes appends b to a bytea or json column (json's binary form is its
// text): an empty b is an empty value, never NULL.
func (c *column) bytes(b []byte) {
	c.n++
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(b)))
	c.buf = append(c.buf, b...)
}

func (c *column) int8(v int64) {
	c.n++
	c.buf = binary.BigEndian.AppendUint32(c.buf, 8)
	c.buf = binary.BigEndian.AppendUint64(c.buf, uint64(v))
}

func (c *column) bool(v bool) {
	c.n++
	c.buf = binary.BigEndian.AppendUint32(c.buf, 1)
	if v {
		c.buf = append(c.buf, 1)
	} else {
		c.buf = append(c.buf, 0)
	}
}

// postgresEpoch is where Postgres counts timestamps from, in µs since 1970.
const postgresEpoch = 946_684_800 * 1_000_000

// time appends t to a timestamptz column, to the microsecond (truncated,
// as pgx does).
func (c *column) time(t time.Time) {
	c.n++
	c.buf = binary.BigEndian.AppendUint32(c.buf, 8)
	µs := t.Unix()*1_000_000 + int64(t.Nanosecond())/1000
	c.buf = binary.BigEndian.AppendUint64(c.buf, uint64(µs-postgresEpoch))
}

// timeOrNull appends t, or NULL when t is zero.
func (c *column) timeOrNull(t time.Time) {
	if t.IsZero() {
		c.null()
		return
	}
	c.time(t)
}

// encode is the column as a one-dimensional Postgres array in binary.
func (c *column) encode() []byte {
	if c.n == 0 {
		// No dimensions, no elements: the empty array.
		return binary.BigEndian.AppendUint32(make([]byte, 8, 12), c.elemOID)
	}
	var hasNull uint32
	if c.hasNull {
		hasNull = 1
	}
	header := c.buf[:arrayHeader]
	binary.BigEndian.PutUint32(header[0:], 1) // dimensions
	binary.BigEndian.PutUint32(header[4:], hasNull)
	binary.BigEndian.PutUint32(header[8:], c.elemOID)
	binary.BigEndian.PutUint32(header[12:], uint32(c.n)) // length of the dimension
	binary.BigEndian.PutUint32(header[16:], 1)           // its lower bound
	return c.buf
}

// execColumns runs sql, whose parameters $1… are columns, in tx, as an
// unnamed statement: Postgres parses and plans it for every batch, which
// costs little beside the batch's rows.
func execColumns(ctx context.Context, tx pgx.Tx, sql string, columns ...*column) (pgconn.CommandTag, error) {
	values, oids, formats := make([][]byte, len(columns)), make([]uint32, len(columns)), make([]int16, len(columns))
	for i, c := range columns {
		values[i], oids[i], formats[i] = c.encode(), c.arrayOID, pgx.BinaryFormatCode
	}
	return tx.Conn().PgConn().ExecParams(ctx, sql, values, oids, formats, nil).Close()
}
