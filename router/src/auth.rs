//! Tenant authentication: `Authorization: Bearer <key>`, looked up by the
//! key's SHA-256 in the tenant directory snapshot (no etcd round trip).

use std::sync::Arc;

use axum::http::HeaderMap;
use control_plane::model::{TenantRecord, hash_api_key};
use control_plane::watch::ClusterView;

use crate::error::RouterError;

pub fn authenticate(
    view: &ClusterView,
    headers: &HeaderMap,
) -> Result<Arc<TenantRecord>, RouterError> {
    let key = common::headers::bearer(headers)
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(RouterError::MissingKey)?;
    view.tenant_by_key_hash(&hash_api_key(key))
        .cloned()
        .ok_or(RouterError::UnknownKey)
}
