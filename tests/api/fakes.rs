//! The fake providers' own pages, as the demo shows them: SnapInspect's "fire a webhook" page and
//! the fake receiver's page link to each other and to the hub.

use std::net::TcpListener;

#[tokio::test]
async fn the_fire_webhook_page_and_the_receiver_link_to_each_other() {
    let app = crate::helpers::spawn_app().await;
    let page = reqwest::get(format!("{}/fire-webhook", app.fake_addr)).await.unwrap().text().await.unwrap();
    // A hub that is not the demo has no /fake/receiver/: no link to it (`demo` asks for one).
    assert!(!page.contains("receiver-link") && !page.contains("/fake/receiver/"), "{page}");
    assert!(page.contains(&format!("href=\"{}/admin/events\"", app.addr)));
    let linking = app.fake.clone().linking_receiver();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(connect_hub::demo::fakes::serve(linking.configure(), listener).unwrap());
    let page = reqwest::get(format!("{at}/fire-webhook")).await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("href=\"{}/fake/receiver/\" id=\"receiver-link\"", app.addr)), "{page}");
    let sent = reqwest::Client::new()
        .post(format!("{}/fire-webhook", app.fake_addr))
        .form(&[("type", "Create_Inspection"), ("company", "6847"), ("inspection", "5")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(sent.contains("Sent Create_Inspection for company 6847: the hub answered HTTP 200."), "{sent}");
    assert!(sent.contains("<pre id=\"sent\">"), "the payload apart, where it can wrap");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let receiver = connect_hub::demo::receiver::FakeReceiver::new(None);
    tokio::spawn(connect_hub::demo::fakes::serve(receiver.configure(), listener).unwrap());
    let receiver = reqwest::get(format!("{base}/")).await.unwrap().text().await.unwrap();
    assert!(receiver.contains("href=\"/fake/snapinspect/fire-webhook\" id=\"fire-link\""), "{receiver}");
}
