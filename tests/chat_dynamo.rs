//! The chat log in DynamoDB (moto server standing in): every turn is an item, and a
//! follow-up is answered from the previous turn read back from the table.

mod support;

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use support::moto::Moto;
use support::{fixtures, Askiam};

async fn client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_are_items_and_follow_ups_read_them_back() {
    let moto = Moto::start();
    let db = client(&moto.endpoint()).await;
    db.create_table()
        .table_name("askiam-chat")
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("conversation_id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("turn")
                .attribute_type(ScalarAttributeType::N)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder().attribute_name("conversation_id").key_type(KeyType::Hash).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("turn").key_type(KeyType::Range).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();

    let a = Askiam::new();
    a.ingest(&[&fixtures()]);
    let endpoint = moto.endpoint();
    let chat = |args: &[&str]| {
        let mut cmd = a.cmd();
        cmd.env("ASKIAM_CHAT_LOG_TABLE", "askiam-chat")
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .arg("chat")
            .args(args)
            .arg("--json");
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = chat(&["tell me about the Payroll Administrator role", "--user", "jdoe"]);
    let conv = first["conversation_id"].as_str().unwrap().to_string();
    let follow = chat(&["who approves it?", "--user", "jdoe", "--conversation", &conv]);
    assert!(follow["entities"].as_array().unwrap().iter().any(|e| e["id"] == "ROLE-0017"), "{follow}");

    let items = db.scan().table_name("askiam-chat").send().await.unwrap();
    assert_eq!(items.count(), 2);
    let mut turns: Vec<(String, String, String)> = items
        .items()
        .iter()
        .map(|i| {
            let s =
                |k: &str| i[k].as_s().map(|v| v.to_string()).or_else(|_| i[k].as_n().map(|v| v.to_string())).unwrap();
            (s("turn"), s("intent"), s("user"))
        })
        .collect();
    turns.sort();
    assert_eq!(
        turns,
        [("1".into(), "role_info".into(), "jdoe".into()), ("2".into(), "who_approves".into(), "jdoe".into())]
    );
}
