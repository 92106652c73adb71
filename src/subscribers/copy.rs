//! Reads the subscribers query's rows by binary `COPY ... TO STDOUT`, straight
//! into Arrow builders (`client_id` text, `restaurant_id` a dictionary): no
//! row objects, no per-value `String`, one pass that also drops repeated
//! pairs while the rows come in byte order.
//!
//! The binary format (PostgreSQL docs, "COPY", "Binary Format"): an 11-byte
//! signature, a 32-bit flags field and a 32-bit header-extension length; then
//! per tuple a 16-bit field count (-1 ends the data) and per field a 32-bit
//! length (-1 for NULL) followed by that many bytes; text is UTF-8 as sent.

use arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder, StringDictionaryBuilder};
use arrow::datatypes::Int32Type;
use std::sync::Arc;

use crate::error::{Error, Result};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Builds the (client_id, restaurant_id) columns from COPY data fed in
/// chunks of any size.
pub(crate) struct CopyRows {
    pending: Vec<u8>,
    header_done: bool,
    finished: bool,
    clients: StringBuilder,
    restaurants: StringDictionaryBuilder<Int32Type>,
    /// Rows kept; repeats dropped while the input is in byte order.
    rows: usize,
    duplicates: usize,
    /// Whether every row so far came in (restaurant_id, client_id) byte order.
    sorted: bool,
    last_client: Vec<u8>,
    last_restaurant: Vec<u8>,
}

impl Default for CopyRows {
    fn default() -> Self {
        CopyRows {
            pending: Vec::new(),
            header_done: false,
            finished: false,
            clients: StringBuilder::new(),
            restaurants: StringDictionaryBuilder::new(),
            rows: 0,
            duplicates: 0,
            sorted: true,
            last_client: Vec::new(),
            last_restaurant: Vec::new(),
        }
    }
}

/// What the rows became.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub batch: RecordBatch,
    pub duplicates: usize,
    /// False when the rows were not in byte order: repeats are still in
    /// `batch` and must be dropped by the caller.
    pub sorted: bool,
}

impl CopyRows {
    /// Parses every complete tuple of `chunk` (with what an earlier chunk
    /// left over).
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(chunk);
        let mut at = 0;
        if !self.header_done {
            match header_len(&buf)? {
                Some(len) => (at, self.header_done) = (len, true),
                None => {
                    self.pending = buf;
                    return Ok(());
                }
            }
        }
        while !self.finished {
            match tuple(&buf[at..])? {
                Tuple::Incomplete => break,
                Tuple::End => (self.finished, at) = (true, at + 2),
                Tuple::Row { used, client, restaurant } => {
                    self.push(client, restaurant)?;
                    at += used;
                }
            }
        }
        buf.drain(..at);
        self.pending = buf;
        Ok(())
    }

    fn push(&mut self, client: &[u8], restaurant: &[u8]) -> Result<()> {
        if self.rows > 0 {
            let order = (self.last_restaurant.as_slice(), self.last_client.as_slice()).cmp(&(restaurant, client));
            if order == std::cmp::Ordering::Equal && self.sorted {
                self.duplicates += 1;
                return Ok(());
            }
            self.sorted &= order == std::cmp::Ordering::Less;
        }
        let text = |b| std::str::from_utf8(b).map_err(|_| bad("a value that is not UTF-8 text"));
        self.clients.append_value(text(client)?);
        self.restaurants.append(text(restaurant)?).map_err(|_| bad("more distinct restaurants than fit in 32 bits"))?;
        self.rows += 1;
        self.last_client.clear();
        self.last_client.extend_from_slice(client);
        self.last_restaurant.clear();
        self.last_restaurant.extend_from_slice(restaurant);
        Ok(())
    }

    /// The columns, once the trailer was read.
    pub(crate) fn finish(mut self) -> Result<Loaded> {
        if !self.finished {
            return Err(bad("COPY data that ended before its trailer"));
        }
        let columns: Vec<ArrayRef> = vec![Arc::new(self.clients.finish()), Arc::new(self.restaurants.finish())];
        debug_assert!(columns.iter().all(|c| c.len() == self.rows));
        let batch = RecordBatch::try_new(crate::schema::subscribers(), columns)
            .map_err(|e| Error::arrow("building the subscribers table", e))?;
        Ok(Loaded { batch, duplicates: self.duplicates, sorted: self.sorted })
    }
}

fn bad(what: &str) -> Error {
    Error::Runtime(format!("the subscribers query returned {what}"))
}

/// Length of the header if `buf` holds all of it.
fn header_len(buf: &[u8]) -> Result<Option<usize>> {
    if buf.len() < SIGNATURE.len() + 8 {
        return Ok(None);
    }
    if !buf.starts_with(SIGNATURE) {
        return Err(bad("COPY data without the binary signature"));
    }
    let extension = be_i32(&buf[SIGNATURE.len() + 4..]) as usize;
    let len = SIGNATURE.len() + 8 + extension;
    Ok((buf.len() >= len).then_some(len))
}

enum Tuple<'a> {
    Incomplete,
    End,
    Row { used: usize, client: &'a [u8], restaurant: &'a [u8] },
}

/// One tuple of two non-null fields at the start of `buf`.
fn tuple(buf: &[u8]) -> Result<Tuple<'_>> {
    if buf.len() < 2 {
        return Ok(Tuple::Incomplete);
    }
    match i16::from_be_bytes([buf[0], buf[1]]) {
        -1 => return Ok(Tuple::End),
        2 => {}
        n => return Err(bad(&format!("{n} columns; it must return exactly client_id and restaurant_id"))),
    }
    let Some((client, at)) = field(buf, 2)? else { return Ok(Tuple::Incomplete) };
    let Some((restaurant, used)) = field(buf, at)? else { return Ok(Tuple::Incomplete) };
    Ok(Tuple::Row { used, client, restaurant })
}

/// The field at `at` and where the next one starts, if complete.
fn field(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>> {
    if buf.len() < at + 4 {
        return Ok(None);
    }
    let len = be_i32(&buf[at..]);
    if len < 0 {
        return Err(bad("a NULL client_id or restaurant_id (both must be non-null text)"));
    }
    let end = at + 4 + len as usize;
    Ok((buf.len() >= end).then(|| (&buf[at + 4..end], end)))
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_data(rows: &[(&str, &str)]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        for (c, r) in rows {
            out.extend_from_slice(&2i16.to_be_bytes());
            for v in [c, r] {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v.as_bytes());
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn rows_split_anywhere_across_chunks_give_the_same_table_as_from_rows() {
        let rows = [("c1", "r1"), ("c1", "r1"), ("c2", "r1"), ("c1", "r2")];
        let data = copy_data(&rows);
        let expected = crate::subscribers::Subscribers::from_rows(
            vec!["c1".into(), "c2".into(), "c1".into()],
            vec!["r1".into(), "r1".into(), "r2".into()],
        )
        .unwrap();
        for chunk in 1..data.len() {
            let mut reader = CopyRows::default();
            for piece in data.chunks(chunk) {
                reader.feed(piece).unwrap();
            }
            let loaded = reader.finish().unwrap();
            assert_eq!(loaded.batch, expected.batch, "chunks of {chunk} bytes");
            assert_eq!((loaded.duplicates, loaded.sorted), (1, true));
        }
    }

    #[test]
    fn unsorted_rows_are_kept_for_the_caller_to_dedupe_and_bad_data_is_named() {
        let mut reader = CopyRows::default();
        reader.feed(&copy_data(&[("c2", "r2"), ("c1", "r1"), ("c2", "r2")])).unwrap();
        let loaded = reader.finish().unwrap();
        assert_eq!((loaded.batch.num_rows(), loaded.sorted, loaded.duplicates), (3, false, 0));

        let mut cut = CopyRows::default();
        let data = copy_data(&[("c1", "r1")]);
        cut.feed(&data[..data.len() - 2]).unwrap();
        assert!(cut.finish().unwrap_err().to_string().contains("ended before its trailer"));
        let mut null = CopyRows::default();
        let mut data = copy_data(&[]);
        data.truncate(data.len() - 2);
        data.extend_from_slice(&2i16.to_be_bytes());
        data.extend_from_slice(&(-1i32).to_be_bytes());
        assert!(null.feed(&data).unwrap_err().to_string().contains("NULL client_id"));
    }
}
