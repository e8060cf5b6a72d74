//! `export.workspace_csv`: every task of a workspace as CSV (RFC 4180 quoting by
//! the `csv` crate: fields with commas, quotes or line breaks are quoted, quotes
//! doubled).
//!
//! Idempotent by construction: the body is stored under the job id (an upsert) in
//! the same transaction that marks the job succeeded, guarded by the lease; a rerun
//! after a crash rewrites the same row, and a worker that lost its lease commits
//! nothing.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Handler, JobContext, JobError};
use crate::db::jobs as job_rows;

/// The content type of the stored result.
pub const CONTENT_TYPE: &str = "text/csv; charset=utf-8";

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
        let rows = job_rows::export_tasks(ctx.state.db.pool(), payload.workspace_id).await?;
        let body = render(&rows).map_err(|e| JobError::Fatal(format!("csv: {e}")))?;
        let mut tx = ctx.state.db.begin().await?;
        job_rows::put_result(&mut tx, ctx.id, payload.workspace_id, CONTENT_TYPE, &body).await?;
        ctx.complete_in(&mut tx).await?;
        tx.commit().await.map_err(crate::db::StoreError::from)?;
        Ok(())
    }
}

/// The CSV: a header, then one record per task in creation order.
pub fn render(rows: &[job_rows::ExportRow]) -> Result<String, csv::Error> {
    let mut out = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    out.write_record([
        "id",
        "title",
        "description",
        "status",
        "assignee_id",
        "version",
        "created_at",
        "updated_at",
    ])?;
    for r in rows {
        out.write_record([
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
    let bytes = out.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8(bytes).unwrap_or_default())
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
        let row = job_rows::ExportRow {
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
