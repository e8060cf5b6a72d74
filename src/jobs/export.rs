//! `export.workspace_csv`: every task of a workspace as CSV (RFC 4180 quoting by
//! the `csv` crate: fields with commas, quotes or line breaks are quoted, quotes
//! doubled).
//!
//! The workspace is read in pages of [`PAGE`] tasks and the CSV written in pieces
//! of about [`CHUNK_BYTES`] as it grows, so a worker holds one page and one piece,
//! however large the workspace; `GET /api/jobs/{id}/result` streams the pieces back.
//!
//! Idempotent by construction: each attempt writes its own pieces (keyed by attempt),
//! and the transaction that marks the job succeeded — guarded by the lease — names
//! that attempt as the result and deletes the other attempts' pieces. A rerun after a
//! crash writes its own; a worker that lost its lease commits nothing.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Handler, JobContext, JobError};
use crate::db::exports::{self, ExportRow};

/// The content type of the stored result.
pub const CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// Tasks read per query.
const PAGE: i64 = 500;

/// A piece is stored once the CSV in hand reaches this size (it ends on a record
/// boundary, so it can pass a page's worth beyond it).
pub const CHUNK_BYTES: usize = 256 * 1024;

/// The handler.
pub struct WorkspaceCsv;

/// Its payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportPayload {
    /// The workspace to export.
    pub workspace_id: Uuid,
}

#[async_trait]
impl Handler for WorkspaceCsv {
    const TYPE: &'static str = "export.workspace_csv";
    type Payload = ExportPayload;

    async fn run(&self, ctx: &JobContext, payload: ExportPayload) -> Result<(), JobError> {
        let db = &ctx.state.db;
        let csv_error = |e: csv::Error| JobError::Fatal(format!("csv: {e}"));
        let mut piece = header().map_err(csv_error)?;
        let mut pieces = 0;
        let mut after: Option<String> = None;
        loop {
            let rows = exports::tasks_page(db.pool(), payload.workspace_id, after.as_deref(), PAGE)
                .await?;
            append(&mut piece, &rows).map_err(csv_error)?;
            let last_page = rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX);
            after = rows.last().map(|r| r.id.clone());
            if piece.len() >= CHUNK_BYTES || last_page {
                let text = String::from_utf8(std::mem::take(&mut piece))
                    .map_err(|e| JobError::Fatal(format!("csv: {e}")))?;
                exports::put_chunk(db.writer(), ctx.id, ctx.attempt, pieces, &text).await?;
                pieces += 1;
            }
            if last_page {
                break;
            }
        }
        let mut tx = db.begin().await?;
        exports::put_result(
            &mut tx,
            ctx.id,
            payload.workspace_id,
            CONTENT_TYPE,
            ctx.attempt,
            pieces,
        )
        .await?;
        ctx.complete_in(&mut tx).await?;
        tx.commit().await.map_err(crate::db::StoreError::from)?;
        Ok(())
    }
}

fn writer(out: &mut Vec<u8>) -> csv::Writer<&mut Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out)
}

/// The CSV's header record.
fn header() -> Result<Vec<u8>, csv::Error> {
    let mut out = Vec::new();
    let mut w = writer(&mut out);
    w.write_record([
        "id",
        "title",
        "description",
        "status",
        "assignee_id",
        "version",
        "created_at",
        "updated_at",
    ])?;
    w.flush()?;
    drop(w);
    Ok(out)
}

/// Appends one record per task to `out`.
fn append(out: &mut Vec<u8>, rows: &[ExportRow]) -> Result<(), csv::Error> {
    let mut w = writer(out);
    for r in rows {
        w.write_record([
            r.id.as_str(),
            &neutralised(&r.title),
            &neutralised(r.description.as_deref().unwrap_or("")),
            r.status.as_str(),
            r.assignee_id.as_deref().unwrap_or(""),
            &r.version.to_string(),
            &crate::clock::rfc3339(r.created_at),
            &crate::clock::rfc3339(r.updated_at),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// A user's text as a cell that a spreadsheet shows instead of running: a cell that
/// starts with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel,
/// LibreOffice and Google Sheets (CSV injection), so it gets a leading `'`, which
/// they show as text. Everything else is left as it is.
fn neutralised(text: &str) -> std::borrow::Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}").into(),
        _ => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole CSV of `rows`.
    fn render(rows: &[ExportRow]) -> Result<String, csv::Error> {
        let mut out = header()?;
        append(&mut out, rows)?;
        Ok(String::from_utf8(out).unwrap_or_default())
    }

    #[test]
    fn cells_a_spreadsheet_would_run_are_neutralised() {
        for formula in [
            "=HYPERLINK(\"http://x\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(neutralised(formula), format!("'{formula}"));
        }
        for plain in ["Write the announcement", "", "a=b", "1-2"] {
            assert_eq!(neutralised(plain), plain);
        }
    }

    #[test]
    fn tricky_fields_are_quoted_per_rfc_4180() {
        let row = ExportRow {
            id: "t1".into(),
            title: "a, \"quoted\"\nline".into(),
            description: None,
            status: "todo".into(),
            assignee_id: None,
            version: 1,
            created_at: 0,
            updated_at: 0,
        };
        let csv = render(&[row]).unwrap();
        let mut lines = csv.split("\r\n");
        assert!(lines.next().unwrap().starts_with("id,title,description,"));
        assert!(csv.contains("t1,\"a, \"\"quoted\"\"\nline\",,todo,,1,"));
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let rec = reader.records().next().unwrap().unwrap();
        assert_eq!(&rec[1], "a, \"quoted\"\nline");
    }
}
