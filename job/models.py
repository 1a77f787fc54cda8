"""The three model families, built by plain functions with flat keyword arguments.

Every model maps (token ids [batch, length], lengths [batch]) to class logits [batch, classes];
the loss is cross-entropy on logits (the seed's MLP ended in a sigmoid, which capped it at 0.44).
Padding id is 0. `build_model(family, ...)` picks the builder by name; configs never enter a model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence


def _embedding(vocab_size: int, embed_dim: int, vectors: torch.Tensor | None, freeze: bool) -> nn.Embedding:
    if vectors is not None:
        return nn.Embedding.from_pretrained(torch.as_tensor(vectors, dtype=torch.float32), freeze=freeze, padding_idx=0)
    layer = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
    layer.weight.requires_grad_(not freeze)
    return layer


class FastDropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on the CPU.

    bernoulli_ draws one random number per element: a fifth of an LSTM step at dim 300 on a CPU,
    and a fifth of an MLP step at batch 128. Here one 64-bit draw gives four 16-bit lanes, and an
    element is kept when its lane clears p * 2**16, so the keep probability is 1 - p to within
    2**-16. CUDA keeps the fused dropout kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.is_cuda or self.inplace:
            return super().forward(x)
        n = x.numel()
        bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= round(self.p * 65536) - 32768
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))  # one multiply in the graph, one in backward


class LSTMClassifier(nn.Module):
    """The seed's MeLiRNNClassifier: embedding -> dropout -> LSTM -> linear on the last hidden state."""

    def __init__(self, embedding: nn.Embedding, hidden: int, layers: int, bidirectional: bool, dropout: float,
                 num_classes: int, packed: bool):
        super().__init__()
        self.embedding = embedding
        self.dropout = FastDropout(dropout)
        self.lstm = nn.LSTM(embedding.embedding_dim, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.out = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)
        # Packing is exact for any batch; a one-way LSTM over right-padded batches gives the same last
        # state read at position length-1, and runs as one cuDNN call without the packing overhead.
        self.packed = packed or bidirectional

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.embedding(tokens))
        if self.packed:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
            if self.lstm.bidirectional:
                last = torch.cat([h[-2], h[-1]], dim=1)
            else:
                last = h[-1]
        else:
            out, _ = self.lstm(x)
            index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[2])
            last = out.gather(1, index.to(torch.int64)).squeeze(1)
        return self.out(last)


class CNNClassifier(nn.Module):
    """Convolutions of widths 2, 3, 4 over the word vectors, max-pooled over the title's windows, then fc -> logits.

    Only windows that start inside the title enter the max. Past a title's end there is only [PAD],
    so a window that starts inside it (the last ones run into the padding, as the course's did; a
    title shorter than a filter keeps its window at 0) holds the same words however wide the batch
    is padded, and the logits do not depend on the padding. Windows that start in the padding are
    left out: they hold no word. Masking the windows that run past the end as well (a width-4
    filter sees a 5-word title twice, not five times) cost 0.018 balanced accuracy on the bench.

    The three widths run as one matrix product: each window of the widest filter (its word vectors
    side by side) times every filter, the narrower ones zero-padded to the widest width. On a CPU
    that is one bf16 GEMM instead of three oneDNN convolutions whose weight gradients cost three
    times their forward. The Conv1d modules only hold the weights, so checkpoints keep their names.
    """

    def __init__(self, embedding: nn.Embedding, filters: int, widths: tuple[int, ...], fc: int, dropout: float, num_classes: int):
        super().__init__()
        self.embedding = embedding
        self.widths = widths
        self.convs = nn.ModuleList(nn.Conv1d(embedding.embedding_dim, filters, w) for w in widths)
        self.fc = nn.Sequential(nn.Linear(filters * len(widths), fc), nn.ReLU(), FastDropout(dropout), nn.Linear(fc, num_classes))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        widest, starts = max(self.widths), tokens.shape[1]  # a window may start at any position of the batch
        tokens = F.pad(tokens, (0, widest - 1))  # [PAD]s, so the last starts have full windows
        x = self.embedding(tokens)  # [batch, starts + widest - 1, dim]
        if torch.is_autocast_enabled(x.device.type):  # cast the vectors once, not the windows (widest x larger)
            x = x.to(torch.get_autocast_dtype(x.device.type))
        batch, _, dim = x.shape
        # one row per window: its word vectors side by side (a copy; 2-D, so matmul never falls back to bmm)
        windows = x.unfold(1, widest, 1).transpose(2, 3).reshape(batch * starts, widest * dim)
        weight = torch.cat([F.pad(conv.weight, (0, widest - conv.kernel_size[0])) for conv in self.convs])
        weight = weight.transpose(1, 2).reshape(len(weight), widest * dim)  # [channels, widest * dim], as the windows
        y = (windows @ weight.t().to(x.dtype)).view(batch, starts, -1)  # [batch, starts, channels]
        in_padding = torch.arange(starts, device=y.device).view(1, -1, 1) >= lengths.clamp(min=1).view(-1, 1, 1)
        pooled = y.masked_fill_(in_padding, float("-inf")).max(dim=1).values  # max before bias and ReLU: both monotone
        bias = torch.cat([conv.bias for conv in self.convs])
        return self.fc(torch.relu(pooled + bias))


def _mlp_layers(dim: int, hidden: int, dropout: float, num_classes: int) -> nn.Sequential:
    """The MLP's layers after the mean vector: hidden -> hidden/2 -> logits, ReLU and dropout between."""
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.ReLU(), FastDropout(dropout),
        nn.Linear(hidden, hidden // 2), nn.ReLU(), FastDropout(dropout),
        nn.Linear(hidden // 2, num_classes),
    )


class MLPClassifier(nn.Module):
    """Mean of the title's word vectors -> hidden -> hidden/2 -> logits, ReLU and dropout between."""

    cpu_bf16 = False  # its matmuls are too small for bf16 to pay for its casts on a CPU

    def __init__(self, embedding: nn.Embedding, hidden: int, dropout: float, num_classes: int):
        super().__init__()
        self.embedding = embedding
        self.net = _mlp_layers(embedding.embedding_dim, hidden, dropout, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # one fused gather-and-sum that skips padding: no [batch, length, dim] tensor, no mask
        summed = F.embedding_bag(tokens, self.embedding.weight, mode="sum", padding_idx=0)
        return self.net(summed / lengths.clamp(min=1).unsqueeze(1).to(summed.dtype))


NGRAM_PRIME = 1_000_003  # the hash of a word n-gram is its ids as digits of this base, modulo the buckets


def ngram_ids(tokens: torch.Tensor, n: int, buckets: int) -> torch.Tensor:
    """Each window of n words of a right-padded batch -> its bucket in 1..buckets, or 0 where it touches [PAD].

    The ids are the token ids themselves, hashed as fastText hashes its word n-grams, so any
    caller that has a title's token ids (train, evaluate, predict) gets the same n-grams.
    """
    ids = tokens.to(torch.int64)
    windows = ids.unfold(1, n, 1)  # [batch, length - n + 1, n]
    code = windows[..., 0]
    for k in range(1, n):
        code = (code * NGRAM_PRIME + windows[..., k]) % buckets  # stays well inside int64
    return torch.where((windows > 0).all(dim=2), code % buckets + 1, 0)


class NgramMLPClassifier(nn.Module):
    """fastText-style: the mean over a title's words and its hashed word n-grams, then the MLP's layers.

    One bag per title holds its words and its 2..`ngrams`-word windows; the words' vectors come
    from the (maybe frozen) word embedding, the n-grams' from a table of `buckets` trained vectors
    (row 0 is [PAD]). Two tables, one mean: the word table may be frozen pretrained vectors while
    the n-gram table always learns. Both tables' gradients are sparse (only the rows a batch
    touches; the word table's when it is tuned), so their optimizer step costs the batch's words
    and n-grams, not the whole tables (optim.build_optimizer gives them RowAdam).
    """

    cpu_bf16 = False  # as the MLP: matmuls too small for bf16 to pay on a CPU

    def __init__(self, embedding: nn.Embedding, hidden: int, dropout: float, num_classes: int, ngrams: int,
                 buckets: int):
        super().__init__()
        self.embedding = embedding
        embedding.sparse = embedding.weight.requires_grad  # a tuned word table: sparse gradients too
        dim = embedding.embedding_dim
        self.ngram_sizes, self.buckets = tuple(range(2, ngrams + 1)), buckets
        self.ngrams = nn.Embedding(buckets + 1, dim, padding_idx=0, sparse=True)
        nn.init.uniform_(self.ngrams.weight, -1.0 / dim, 1.0 / dim)  # fastText's initialisation
        with torch.no_grad():
            self.ngrams.weight[0].zero_()
        self.net = _mlp_layers(dim, hidden, dropout, num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        summed = F.embedding_bag(tokens, self.embedding.weight, mode="sum", padding_idx=0, sparse=self.embedding.sparse)
        count = lengths.clamp(min=1).to(summed.dtype)
        for n in self.ngram_sizes:
            if tokens.shape[1] < n:
                continue
            ids = ngram_ids(tokens, n, self.buckets)
            summed = summed + F.embedding_bag(ids, self.ngrams.weight, mode="sum", padding_idx=0, sparse=True)
            count = count + (ids > 0).sum(dim=1).to(summed.dtype)
        return self.net(summed / count.unsqueeze(1))


def build_lstm(vocab_size: int, embed_dim: int, num_classes: int, hidden: int = 100, layers: int = 1,
               bidirectional: bool = False, dropout: float = 0.3, vectors=None, freeze: bool = True,
               packed: bool = False) -> nn.Module:
    return LSTMClassifier(_embedding(vocab_size, embed_dim, vectors, freeze), hidden, layers, bidirectional, dropout, num_classes, packed)


def build_cnn(vocab_size: int, embed_dim: int, num_classes: int, filters: int = 100, widths: tuple[int, ...] = (2, 3, 4),
              fc: int = 128, dropout: float = 0.3, vectors=None, freeze: bool = True) -> nn.Module:
    return CNNClassifier(_embedding(vocab_size, embed_dim, vectors, freeze), filters, widths, fc, dropout, num_classes)


def build_mlp(vocab_size: int, embed_dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.3,
              vectors=None, freeze: bool = True, ngrams: int = 1, buckets: int = 0) -> nn.Module:
    """The MLP over the mean word vector; with buckets > 0, over words and hashed 2..ngrams-word n-grams."""
    embedding = _embedding(vocab_size, embed_dim, vectors, freeze)
    if buckets > 0 and ngrams > 1:
        return NgramMLPClassifier(embedding, hidden, dropout, num_classes, ngrams, buckets)
    return MLPClassifier(embedding, hidden, dropout, num_classes)


BUILDERS = {"lstm": build_lstm, "cnn": build_cnn, "mlp": build_mlp}


def builder_kwargs(config) -> dict:
    """The builder arguments a TrainConfig asks for (the config itself stays out of the model)."""
    if config.family == "lstm":
        return {"hidden": config.hidden, "layers": config.layers, "bidirectional": config.bidirectional,
                "dropout": config.dropout, "freeze": config.freeze_embeddings}
    if config.family == "cnn":
        return {"filters": config.filters, "fc": config.fc, "dropout": config.dropout, "freeze": config.freeze_embeddings}
    return {"hidden": config.mlp_hidden, "dropout": config.dropout, "freeze": config.freeze_embeddings,
            "ngrams": config.word_ngrams, "buckets": config.ngram_buckets}


def build_model(family: str, vocab_size: int, embed_dim: int, num_classes: int, **kwargs) -> nn.Module:
    return BUILDERS[family](vocab_size, embed_dim, num_classes, **kwargs)
