//! `jwt-gate forward-auth` behind a real nginx: `auth_request` asks it about every request,
//! `auth_request_set` copies the identity it answers with to the upstream.
//!
//! nginx is Debian's (`scripts/test.sh` installs it), started here on 127.0.0.1 as the
//! current user with its own configuration, pid, log and temporary files in a temp dir.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::{Method, StatusCode};

use crate::common::{self, call, get, get_with};
use crate::{start, upstream, TempDir};

/// A running nginx, stopped when dropped.
#[derive(Debug)]
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("nginx is installed (scripts/test.sh installs Debian's nginx)")
}

/// nginx in front of `upstream`, asking `forward_auth` about every request except `/auth/`,
/// which it proxies to `forward_auth` itself (the auth service is mounted there).
async fn nginx(dir: &TempDir, forward_auth: SocketAddr, upstream: SocketAddr) -> Nginx {
    // A free port for nginx: taken from the kernel, then handed over.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = dir.0.display();
    let config = format!(
        r#"
daemon off;
master_process off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /_jwt_gate {{
            internal;
            proxy_pass http://{forward_auth}/check;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
        }}
        location /auth/ {{
            proxy_pass http://{forward_auth};
        }}
        location / {{
            auth_request /_jwt_gate;
            auth_request_set $auth_sub $upstream_http_x_auth_sub;
            proxy_set_header X-Auth-Sub $auth_sub;
            proxy_pass http://{upstream};
        }}
    }}
}}
"#
    );
    let file = dir.write("nginx.conf", &config);
    let child = Command::new(nginx_binary())
        .args([
            "-p",
            &root.to_string(),
            "-e",
            &format!("{root}/error.log"),
            "-c",
        ])
        .arg(&file)
        .stdin(Stdio::null())
        .spawn()
        .expect("nginx starts");
    // Owned at once, so it is stopped however this ends.
    let nginx = Nginx {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(nginx.addr).await.is_ok() {
            return nginx;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "nginx did not start: {}",
        std::fs::read_to_string(dir.0.join("error.log")).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_passes_identity_refuses_without_token_and_after_logout() {
    let dir = TempDir::new("nginx");
    let config = dir.write(
        "gate.toml",
        "[[routes]]\npath = \"/health\"\naccess = \"open\"\n\n\
         [[routes]]\npath = \"/static/*\"\naccess = \"open\"\n\n\
         [[routes]]\nmethods = [\"GET\"]\npath = \"/catalogue/*\"\naccess = \"open\"\n\n\
         [users]\nsqlite = \"users.db\"\n",
    );
    let gate = start(&config, "forward-auth");
    let upstream = upstream().await;
    let nginx = nginx(&dir, gate.addr, upstream).await;

    // No token: the gate's 401, its challenge passed through by nginx.
    let refused = get(nginx.addr, "/api/orders", None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"jwt-gate\"")
    );
    // An identity header of the client's own is no way in.
    let spoofed = get_with(nginx.addr, "/api/orders", &[("x-auth-sub", "admin")]).await;
    assert_eq!(spoofed.status, StatusCode::UNAUTHORIZED);
    // An open route passes without one, and the upstream sees no identity.
    let open = get(nginx.addr, "/health", None).await;
    assert_eq!(open.status, StatusCode::OK);
    assert_eq!(open.json(), serde_json::json!({}));
    // A route open to one method only: nginx names the method, and it counts.
    let read = get(nginx.addr, "/catalogue/shoes", None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    let write = call(nginx.addr, Method::DELETE, "/catalogue/shoes", &[], "").await;
    assert_eq!(write.status, StatusCode::UNAUTHORIZED, "{}", write.text);

    // A user registers and logs in through nginx, at the auth service jwt-gate mounts.
    let registered = call(
        nginx.addr,
        Method::POST,
        "/auth/register",
        &[("content-type", "application/json")],
        serde_json::json!({"username": "alice", "email": "alice@example.com", "password": common::PASSWORD}).to_string(),
    )
    .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text
    );
    let login = call(
        nginx.addr,
        Method::POST,
        "/auth/token",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!(
            "username=alice&password={}",
            common::PASSWORD.replace(' ', "+")
        ),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text);
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");

    // A valid token: 200, and the upstream learns who, from jwt-gate, not from the client.
    let allowed = get_with(
        nginx.addr,
        "/api/orders?page=2",
        &[("authorization", &bearer), ("x-auth-sub", "admin")],
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text);
    assert_eq!(allowed.json()["x-auth-sub"], "alice");

    // A path nginx reads otherwise than it is written (`$request_uri` keeps the dots, nginx
    // serves `/api/orders`) is refused, never judged: not open under `/static/*`, and not
    // passed on a token either. nginx shows forward-auth's 400 as a 500.
    for headers in [vec![], vec![("authorization", bearer.as_str())]] {
        let dotted = get_with(nginx.addr, "/static/../api/orders", &headers).await;
        assert_eq!(
            dotted.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            dotted.text
        );
    }
    // A fragment in the request target: nginx matches its locations on what comes before
    // the `#` but passes the whole target upstream, where some servers read it as part of
    // the path and serve `/api/orders`. Refused, as the dots are.
    let fragment = common::raw_status(
        nginx.addr,
        b"GET /static/#/../api/orders HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(fragment, 500);

    // Logout, then the same token is refused by every check.
    let logout = call(
        nginx.addr,
        Method::POST,
        "/auth/logout",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(logout.status, StatusCode::OK, "{}", logout.text);
    let after = get_with(nginx.addr, "/api/orders", &[("authorization", &bearer)]).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.text);
    assert!(after
        .header("www-authenticate")
        .is_some_and(|challenge| challenge.contains("error=\"invalid_token\"")));
    drop(nginx);
}
