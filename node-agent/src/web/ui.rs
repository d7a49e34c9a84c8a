//! The Web UI (placeholder; see webui.md).

use std::sync::Arc;

use axum::Router;

use crate::shared::Shared;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
}
