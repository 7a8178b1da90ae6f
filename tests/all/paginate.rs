//! `nango.paginate`: cursor, link and offset, with the original's stop rules.

use serde_json::{Value, json};
use sluice_runtime::ExecError;
use sluice_tests::{Harness, MockRequest, MockResponse, guests, output};

fn pages(out: &Value) -> Vec<Value> {
    out["pages"].as_array().cloned().unwrap_or_default()
}

async fn paginate(h: &Harness, input: Value) -> Value {
    output(&h.action(guests::ACTION_PAGINATE, input).await)
}

async fn paginate_error(h: &Harness, input: Value) -> String {
    match h.action(guests::ACTION_PAGINATE, input).await.outcome {
        Err(ExecError::Script(f)) => f.message,
        other => panic!("expected a pagination error, got {other:?}"),
    }
}

/// Cursor pages: no cursor → [1,2] next "a"; a → [3] next "b"; b → [] ;
/// n → [4] next "  " (blank: ends after this page); 7 → [5] next 8 (a number).
fn cursor_api(req: &MockRequest) -> MockResponse {
    let body = match req.query_param("cursor") {
        None => json!({"items": [1, 2], "meta": {"next": "a"}}),
        Some("a") => json!({"items": [3], "meta": {"next": "b"}}),
        Some("b") => json!({"items": [], "meta": {"next": "c"}}),
        Some("n") => json!({"items": [4], "meta": {"next": "  "}}),
        Some("7") => json!({"items": [5], "meta": {"next": 8}}),
        Some("8") => json!({"items": [6], "meta": {"next": null}}),
        Some(other) => json!({"error": other}),
    };
    MockResponse::json(200, &body)
}

fn cursor_config() -> Value {
    json!({"type": "cursor", "cursor_name_in_request": "cursor", "cursor_path_in_response": "meta.next", "response_path": "items"})
}

#[tokio::test]
async fn cursor_stops_on_an_empty_page_without_yielding_it() {
    let h = Harness::simple(cursor_api).await;
    let out = paginate(&h, json!({"endpoint": "/items", "config": cursor_config()})).await;
    assert_eq!(pages(&out), vec![json!([1, 2]), json!([3])]);
    let cursors: Vec<_> = h
        .mock
        .requests()
        .iter()
        .map(|r| r.query_param("cursor").map(str::to_string))
        .collect();
    assert_eq!(cursors, vec![None, Some("a".into()), Some("b".into())]);
}

#[tokio::test]
async fn cursor_stops_after_a_blank_cursor_and_follows_numbers() {
    let h = Harness::simple(cursor_api).await;
    let out = paginate(
        &h,
        json!({"endpoint": "/items", "params": {"cursor": "n"}, "config": cursor_config()}),
    )
    .await;
    assert_eq!(pages(&out), vec![json!([4])]);
    assert_eq!(h.mock.requests().len(), 1);

    let h = Harness::simple(cursor_api).await;
    let out = paginate(
        &h,
        json!({"endpoint": "/items", "params": {"cursor": "7"}, "config": cursor_config()}),
    )
    .await;
    assert_eq!(pages(&out), vec![json!([5]), json!([6])]);
    assert_eq!(h.mock.requests()[1].query_param("cursor"), Some("8"));
}

#[tokio::test]
async fn cursor_with_limit_sends_the_limit_on_every_request() {
    let h = Harness::simple(cursor_api).await;
    let mut config = cursor_config();
    config["limit"] = json!(2);
    config["limit_name_in_request"] = json!("per");
    paginate(&h, json!({"endpoint": "/items", "config": config})).await;
    assert!(
        h.mock
            .requests()
            .iter()
            .all(|r| r.query_param("per") == Some("2"))
    );
}

#[tokio::test]
async fn cursor_in_the_body_for_post_with_dotted_names() {
    let h = Harness::simple(|req: &MockRequest| {
        let body = req.json().unwrap_or_default();
        let page = match body["page"]["cursor"].as_str() {
            None => json!({"items": [1], "next": "z"}),
            Some("z") => json!({"items": [2], "next": ""}),
            Some(_) => json!({"items": []}),
        };
        MockResponse::json(200, &page)
    })
    .await;
    let config = json!({"type": "cursor", "cursor_name_in_request": "page.cursor", "cursor_path_in_response": "next", "response_path": "items"});
    let out = paginate(
        &h,
        json!({"endpoint": "/search", "post": true, "config": config}),
    )
    .await;
    assert_eq!(pages(&out), vec![json!([1]), json!([2])]);
    let second = h.mock.requests()[1].json().unwrap();
    assert_eq!(second, json!({"page": {"cursor": "z"}}));
    assert!(h.mock.requests()[1].query.is_empty());
}

#[tokio::test]
async fn link_header_follows_absolute_links_until_none() {
    let h = Harness::simple(|req: &MockRequest| {
        let host = req.header("host").unwrap_or_default().to_string();
        match req.query_param("page") {
            None => MockResponse::json(200, &json!([1, 2]))
                .with_header("link", &format!("<http://{host}/repos/issues?page=2&per_page=2>; rel=\"next\", <http://{host}/repos/issues?page=9>; rel=\"last\"")),
            Some("2") => MockResponse::json(200, &json!([3])),
            Some(_) => MockResponse::json(200, &json!([99])),
        }
    })
    .await;
    let config = json!({"type": "link", "link_rel_in_response_header": "next", "limit": 2, "limit_name_in_request": "per_page"});
    let out = paginate(&h, json!({"endpoint": "/repos/issues", "config": config})).await;
    assert_eq!(pages(&out), vec![json!([1, 2]), json!([3])]);
    let reqs = h.mock.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].query_param("per_page"), Some("2"));
    assert_eq!(reqs[1].path, "/repos/issues");
    assert_eq!(reqs[1].query_param("page"), Some("2"));
}

/// A comma inside a next link's URL (`fields=a,b`) is part of the URL:
/// split on every comma, the header gave no next link after page 1.
#[tokio::test]
async fn link_header_urls_may_hold_commas() {
    let h = Harness::simple(|req: &MockRequest| {
        let host = req.header("host").unwrap_or_default().to_string();
        let link = |page: u32, rel: &str| {
            format!("<http://{host}/issues?fields=id,title&page={page}>; rel=\"{rel}\"")
        };
        match req.query_param("page") {
            None => MockResponse::json(200, &json!([1]))
                .with_header("link", &format!("{}, {}", link(2, "next"), link(3, "last"))),
            Some("2") => MockResponse::json(200, &json!([2]))
                .with_header("link", &format!("{},{}", link(1, "prev"), link(3, "next"))),
            Some("3") => MockResponse::json(200, &json!([3]))
                .with_header("link", &format!("not a link, {}", link(2, "prev"))),
            Some(_) => MockResponse::json(200, &json!([99])),
        }
    })
    .await;
    let config = json!({"type": "link", "link_rel_in_response_header": "next"});
    let out = paginate(&h, json!({"endpoint": "/issues", "config": config})).await;
    assert_eq!(pages(&out), vec![json!([1]), json!([2]), json!([3])]);
    let reqs = h.mock.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[1].query_param("fields"), Some("id,title"));
    assert_eq!(reqs[2].query_param("page"), Some("3"));
}

/// A last page answered with no body (a 204, or a 200 with nothing) ends
/// the pagination as an empty page does, and a body starting with a byte
/// order mark is read as JSON, as the original's axios reads them (both
/// failed the whole sync with `invalid_response`).
#[tokio::test]
async fn an_empty_last_page_ends_and_a_byte_order_mark_is_skipped() {
    for last in [204, 200] {
        let h = Harness::simple(move |req: &MockRequest| match req.query_param("cursor") {
            None => {
                let mut r =
                    MockResponse::json(200, &json!({"items": [1, 2], "meta": {"next": "a"}}));
                r.body.splice(0..0, *b"\xEF\xBB\xBF");
                r
            }
            Some("a") => MockResponse::json(200, &json!({"items": [3], "meta": {"next": "b"}})),
            Some(_) => MockResponse {
                status: last,
                headers: vec![],
                body: vec![],
                delay: None,
            },
        })
        .await;
        let out = paginate(&h, json!({"endpoint": "/items", "config": cursor_config()})).await;
        assert_eq!(
            pages(&out),
            vec![json!([1, 2]), json!([3])],
            "status {last}"
        );
        assert_eq!(h.mock.requests().len(), 3);
    }

    // The zero-yaml SDK's link pagination yields every page: one answered
    // with no body is an empty page, and the header's next link is still
    // followed.
    let h = Harness::simple(|req: &MockRequest| {
        let host = req.header("host").unwrap_or_default().to_string();
        match req.query_param("page") {
            None => MockResponse {
                status: 200,
                headers: vec![(
                    "link".into(),
                    format!("<http://{host}/feed?page=2>; rel=\"next\""),
                )],
                body: vec![],
                delay: None,
            },
            Some(_) => MockResponse::json(200, &json!([7])),
        }
    })
    .await;
    let config = json!({"type": "link", "link_rel_in_response_header": "next"});
    let mut exec = h.execution(
        "test-action",
        sluice_runtime::Call::Action {
            input: Some(json!({"endpoint": "/feed", "config": config}).to_string()),
        },
    );
    exec.zero_yaml = true;
    let report = sluice_tests::runtime()
        .execute(
            &sluice_tests::script(guests::ACTION_PAGINATE),
            exec,
            h.services(),
        )
        .await;
    assert_eq!(pages(&output(&report)), vec![json!([]), json!([7])]);

    // A body that is not JSON is still an error naming the problem.
    let h = Harness::simple(|_: &MockRequest| MockResponse {
        status: 200,
        headers: vec![],
        body: b"<html>".to_vec(),
        delay: None,
    })
    .await;
    let message =
        paginate_error(&h, json!({"endpoint": "/items", "config": cursor_config()})).await;
    assert!(
        message.starts_with("pagination needs a JSON response"),
        "{message}"
    );
}

#[tokio::test]
async fn link_in_the_body_as_a_relative_path() {
    let h = Harness::simple(|req: &MockRequest| match req.query_param("p") {
        None => MockResponse::json(
            200,
            &json!({"data": [1], "links": {"next": "/v2/things?p=2"}}),
        ),
        Some("2") => MockResponse::json(200, &json!({"data": [2], "links": {"next": ""}})),
        Some(_) => MockResponse::json(200, &json!({"data": []})),
    })
    .await;
    let config = json!({"type": "link", "link_path_in_response_body": "links.next", "response_path": "data"});
    let out = paginate(&h, json!({"endpoint": "/v2/things", "config": config})).await;
    assert_eq!(pages(&out), vec![json!([1]), json!([2])]);
    assert_eq!(h.mock.requests()[1].path, "/v2/things");
}

/// Five items served by offset and limit.
fn offset_api(req: &MockRequest) -> MockResponse {
    let all = [10, 20, 30, 40, 50];
    let offset: usize = req
        .query_param("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let limit: usize = req
        .query_param("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(2);
    let page: Vec<_> = all.iter().skip(offset).take(limit).collect();
    MockResponse::json(200, &json!({"records": page}))
}

#[tokio::test]
async fn offset_with_limit_stops_on_a_short_page() {
    let h = Harness::simple(offset_api).await;
    let config = json!({"type": "offset", "offset_name_in_request": "offset", "limit": 2, "limit_name_in_request": "limit", "response_path": "records"});
    let out = paginate(&h, json!({"endpoint": "/records", "config": config})).await;
    assert_eq!(
        pages(&out),
        vec![json!([10, 20]), json!([30, 40]), json!([50])]
    );
    let offsets: Vec<_> = h
        .mock
        .requests()
        .iter()
        .map(|r| r.query_param("offset").unwrap_or("-").to_string())
        .collect();
    assert_eq!(offsets, vec!["0", "2", "4"]);
}

#[tokio::test]
async fn offset_without_limit_stops_on_an_empty_page() {
    let h = Harness::simple(offset_api).await;
    let config =
        json!({"type": "offset", "offset_name_in_request": "offset", "response_path": "records"});
    let out = paginate(&h, json!({"endpoint": "/records", "config": config})).await;
    assert_eq!(pages(&out).len(), 3);
    assert_eq!(
        h.mock.requests().len(),
        4,
        "the empty page is requested, not yielded"
    );
}

#[tokio::test]
async fn offset_per_page_counts_pages() {
    let h = Harness::simple(|req: &MockRequest| {
        let page: u32 = req
            .query_param("page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(99);
        let items: Vec<u32> = if page <= 2 { vec![page] } else { vec![] };
        MockResponse::json(200, &json!(items))
    })
    .await;
    let config = json!({"type": "offset", "offset_name_in_request": "page", "offset_start_value": 1, "offset_calculation_method": "per-page"});
    let out = paginate(&h, json!({"endpoint": "/p", "config": config})).await;
    assert_eq!(pages(&out), vec![json!([1]), json!([2])]);
}

#[tokio::test]
async fn provider_defaults_merge_with_script_overrides() {
    let h = Harness::new(
        cursor_api,
        "mock:\n  auth_mode: OAUTH2\n  proxy:\n    base_url: {base}\n    paginate:\n      type: cursor\n      cursor_name_in_request: cursor\n      cursor_path_in_response: meta.next\n      response_path: wrong\n",
        json!({"type": "OAUTH2", "access_token": "t"}),
    )
    .await;
    let out = paginate(
        &h,
        json!({"endpoint": "/items", "config": {"response_path": "items"}}),
    )
    .await;
    assert_eq!(pages(&out), vec![json!([1, 2]), json!([3])]);
}

#[tokio::test]
async fn invalid_configs_are_named() {
    let h = Harness::simple(cursor_api).await;
    assert_eq!(
        paginate_error(&h, json!({"endpoint": "/items"})).await,
        "There was no pagination configuration for this integration or configuration passed in."
    );
    assert_eq!(
        paginate_error(&h, json!({"endpoint": "/items", "config": {"type": "cursor", "cursor_name_in_request": "c"}})).await,
        "Param cursor_path_in_response is required for cursor pagination"
    );
    assert_eq!(
        paginate_error(
            &h,
            json!({"endpoint": "/items", "config": {"type": "pages"}})
        )
        .await,
        "Pagination type pages is not supported. Only cursor, link and offset pagination types are supported."
    );
    assert!(h.mock.requests().is_empty());
}
