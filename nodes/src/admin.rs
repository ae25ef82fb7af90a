//! The admin HTTP server (actix-web): JSON-RPC 2.0 at `/RPC`, Prometheus metrics at
//! `/metrics` (OpenMetrics when asked for, else the text format 0.0.4: see
//! [`crate::exposition`]), `/health/live` and `/health/ready`. An optional bearer
//! token guards `/RPC` and `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use prometheus_client::registry::Registry;

use crate::exposition;
use crate::rpc::{self, Node};

pub struct AdminState {
    pub node: Node,
    pub registry: Registry,
    pub ready: AtomicBool,
    pub token: Option<String>,
}

fn authorized(state: &AdminState, req: &HttpRequest) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token)
}

async fn rpc_endpoint(
    state: web::Data<AdminState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let source = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    if !authorized(&state, &req) {
        tracing::warn!("admin request refused: source={source} path=/RPC reason=token");
        return HttpResponse::Unauthorized().finish();
    }
    // Methods run on the blocking pool: one that waits for the network (`sip.ping`)
    // holds no I/O thread of the admin server.
    let answer = web::block(move || rpc::handle_body(&state.node, &body, &source)).await;
    match answer {
        Ok(Some(v)) => HttpResponse::Ok().json(v),
        Ok(None) => HttpResponse::NoContent().finish(),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn metrics(state: web::Data<AdminState>, req: HttpRequest) -> HttpResponse {
    if !authorized(&state, &req) {
        return HttpResponse::Unauthorized().finish();
    }
    let accept = req.headers().get("accept").and_then(|v| v.to_str().ok());
    let mut text = String::new();
    let (encoded, content_type) = if exposition::wants_openmetrics(accept) {
        (
            prometheus_client::encoding::text::encode(&mut text, &state.registry),
            exposition::OPENMETRICS,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut text, &state.registry),
            exposition::TEXT,
        )
    };
    match encoded {
        Ok(()) => HttpResponse::Ok().content_type(content_type).body(text),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().body("live\n")
}

/// Ready unless starting or draining. A node whose etcd does not answer is still ready
/// (calls and registrations go on with what it has) and says so: `ready, degraded`.
async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    if state.ready.load(Ordering::Relaxed) && !state.node.proxy.is_draining() {
        let degraded = state.node.cluster.status().degraded;
        HttpResponse::Ok().body(if degraded {
            "ready, degraded: the cluster store does not answer\n"
        } else {
            "ready\n"
        })
    } else {
        HttpResponse::ServiceUnavailable().body("not ready\n")
    }
}

/// Binds the admin server; the returned future runs it.
pub fn serve(state: Arc<AdminState>, addr: SocketAddr) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::from(state);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .route("/RPC", web::post().to(rpc_endpoint))
            .route("/metrics", web::get().to(metrics))
            .route("/health/live", web::get().to(live))
            .route("/health/ready", web::get().to(ready))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?
    .run())
}
