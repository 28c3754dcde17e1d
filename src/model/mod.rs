/*!
Models: BERT on candle, tokenization, pooling and loading of checkpoints.
*/
