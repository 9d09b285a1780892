//! Each table's row read back into its record, written once for both dialects: a backend
//! only says how to read one column of its rows by name (`ReadRow`), and every reader here
//! names the columns through `sql.rs`. A new column is then one line here.

use super::sql::{self, Columns, Naming};
use super::{AgentRecord, AliasRecord, ConversationRecord, FileRecord};
use crate::domain::ids::{AgentId, ConversationId, EntryId, FileId};
use crate::domain::time::Timestamp;
use serde::de::DeserializeOwned;

/// A result row of one dialect, read by column name.
pub(crate) trait ReadRow {
    type Error;

    fn text(&self, column: &str) -> Result<String, Self::Error>;
    fn optional_text(&self, column: &str) -> Result<Option<String>, Self::Error>;
    fn int(&self, column: &str) -> Result<i64, Self::Error>;
    fn optional_int(&self, column: &str) -> Result<Option<i64>, Self::Error>;
    /// A JSON column (text in SQLite, `jsonb` in Postgres) that is never NULL.
    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, Self::Error>;
    fn optional_json<T: DeserializeOwned>(&self, column: &str) -> Result<Option<T>, Self::Error>;

    fn time(&self, column: &str) -> Result<Timestamp, Self::Error> {
        self.int(column).map(Timestamp::from_micros)
    }
}

/// `ReadRow` for a dialect's row type: the scalar columns through its own typed getter
/// (`get` for rusqlite, `try_get` for sqlx), the JSON ones through the two given functions.
macro_rules! read_row {
    ($row:ty, $error:ty, $get:ident, $json:path, $optional_json:path) => {
        impl $crate::store::rows::ReadRow for $row {
            type Error = $error;
            fn text(&self, column: &str) -> Result<String, $error> {
                self.$get(column)
            }
            fn optional_text(&self, column: &str) -> Result<Option<String>, $error> {
                self.$get(column)
            }
            fn int(&self, column: &str) -> Result<i64, $error> {
                self.$get(column)
            }
            fn optional_int(&self, column: &str) -> Result<Option<i64>, $error> {
                self.$get(column)
            }
            fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Result<T, $error> {
                $json(self, column)
            }
            fn optional_json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Result<Option<T>, $error> {
                $optional_json(self, column)
            }
        }
    };
}
pub(crate) use read_row;

/// The agent's row and version of a row, named as `naming` says.
pub(crate) fn agent_record<R: ReadRow>(row: &R, naming: Naming) -> Result<AgentRecord, R::Error> {
    use sql::{Agent as A, AgentVersion as V};
    // In select order (`sql::agent_columns`): SQLite's reader looks from the last column.
    Ok(AgentRecord {
        id: AgentId(row.text(naming.of(A::Id))?),
        active_version: row.int(naming.of(A::ActiveVersion))?,
        latest_version: row.int(naming.of(A::LatestVersion))?,
        revision: row.int(naming.of(A::Revision))?,
        created_at: row.time(naming.of(A::CreatedAt))?,
        updated_at: row.time(naming.of(A::UpdatedAt))?,
        version: row.int(naming.of(V::Version))?,
        config: row.json(naming.of(V::Config))?,
    })
}

pub(crate) fn alias_record<R: ReadRow>(row: &R) -> Result<AliasRecord, R::Error> {
    use sql::AgentAlias as L;
    Ok(AliasRecord {
        alias: row.text(L::Alias.name())?,
        version: row.int(L::Version.name())?,
        created_at: row.time(L::CreatedAt.name())?,
        updated_at: row.time(L::UpdatedAt.name())?,
    })
}

pub(crate) fn conversation_record<R: ReadRow>(row: &R) -> Result<ConversationRecord, R::Error> {
    use sql::Conversation as C;
    Ok(ConversationRecord {
        id: ConversationId(row.text(C::Id.name())?),
        head: row.optional_text(C::Head.name())?.map(EntryId),
        agent_id: row.optional_text(C::AgentId.name())?,
        agent_version: row.optional_json(C::AgentVersion.name())?,
        model: row.optional_text(C::Model.name())?,
        instructions: row.optional_text(C::Instructions.name())?,
        tools: row.optional_json(C::Tools.name())?,
        completion_args: row.optional_json(C::CompletionArgs.name())?,
        guardrails: row.optional_json(C::Guardrails.name())?,
        name: row.optional_text(C::Name.name())?,
        description: row.optional_text(C::Description.name())?,
        metadata: row.optional_json(C::Metadata.name())?,
        created_at: row.time(C::CreatedAt.name())?,
        updated_at: row.time(C::UpdatedAt.name())?,
    })
}

pub(crate) fn file_record<R: ReadRow>(row: &R) -> Result<FileRecord, R::Error> {
    use sql::File as F;
    Ok(FileRecord {
        id: FileId(row.text(F::Id.name())?),
        filename: row.text(F::Filename.name())?,
        bytes: row.int(F::Bytes.name())?,
        purpose: row.text(F::Purpose.name())?,
        sample_type: row.text(F::SampleType.name())?,
        source: row.text(F::Source.name())?,
        mimetype: row.optional_text(F::Mimetype.name())?,
        num_lines: row.optional_int(F::NumLines.name())?,
        visibility: row.optional_text(F::Visibility.name())?,
        expires_at: row.optional_int(F::ExpiresAt.name())?,
        created_at: row.time(F::CreatedAt.name())?,
    })
}

/// A row of `sql::select_conversation_with_agent`: a NULL version means no version was
/// joined (the agent may have been: its version is the one missing).
pub(crate) fn conversation_with_agent<R: ReadRow>(
    row: &R,
) -> Result<(ConversationRecord, Option<AgentRecord>), R::Error> {
    // The conversation's columns come first in the select list (read in order, as above).
    let conversation = conversation_record(row)?;
    let agent = match row.optional_int(Naming::Joined.of(sql::AgentVersion::Version))? {
        Some(_) => Some(agent_record(row, Naming::Joined)?),
        None => None,
    };
    Ok((conversation, agent))
}
