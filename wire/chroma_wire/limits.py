"""The limits both ends enforce: the client checks them before it sends, the server again
because it trusts no client."""

#: nearest neighbours a query may ask for, query vectors in one call, and neighbours one
#: call may return in all (queries x k): its reply is built whole in memory, some 60 bytes
#: and the neighbours' catalogue a neighbour. The client asks in batches that fit.
MAX_K = 10_000
MAX_QUERIES = 100_000
MAX_NEIGHBORS = 1_000_000
#: dimensions of an embedding
MAX_DIM = 65_536
#: characters of an id, of other catalogue text, and of a row's metadata JSON
MAX_ID_CHARS = 512
MAX_TEXT_CHARS = 4096
MAX_METADATA_CHARS = 65_536
#: characters of a trigger's note
MAX_NOTE_CHARS = 10_000
#: rows at most in one page of an export, and the vector bytes a page of rows holds at most
MAX_PAGE_ROWS = 100_000
MAX_PAGE_BYTES = 256 << 20
#: what stores hold in an integer column
MAX_INT = (1 << 63) - 1
#: the largest integer, either sign, metadata may hold or a filter compare it with: every
#: store compares metadata numbers as 64-bit floats, exact for every integer up to 2^53
MAX_EXACT_INTEGER = 1 << 53
#: lists and dicts inside one parameter; deeper ones would exhaust Python's stack in the
#: code that reads them (json, repr), far below which a where filter stops at 16 levels
MAX_NESTING = 64
#: seconds a watch waits for an event before it answers with none, and events in one answer
MAX_WATCH_SECONDS = 30.0
MAX_WATCH_EVENTS = 10_000
